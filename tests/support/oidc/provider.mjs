// A real OpenID provider for the tests: panva's oidc-provider (pinned, testbed::OIDC_PACKAGES),
// set up as a client-credentials token endpoint behind a proxy, with DPoP (RFC 9449) and
// mutual-TLS certificate-bound tokens (RFC 8705), so the tests can see what a real
// authorization server makes of what tokengate passes on.
//
// usage: node provider.mjs <port> <clients.json> [--tls <cert.pem> <key.pem>] [--issuer <url>]
//                          [--exit-with-stdin]
//   <port>          on 127.0.0.1; 0 picks a free one.
//   <clients.json>  a JSON list of clients, each {"client_id", "client_secret"} (client_secret_basic
//                   or _post) or {"client_id", "tls_client_auth_subject_dn"} (tls_client_auth,
//                   certificate-bound tokens); any other client metadata given is kept.
//   --tls           serve HTTPS instead of HTTP (for a client that calls the provider itself).
//   --exit-with-stdin  exit when stdin closes: the parent's pipe closes when the parent dies.
// Packages: $TOKENGATE_OIDC_MODULES (see modules.mjs).
// Prints {"ready":true,"port":N} on stdout once listening, and nothing else on stdout; one
// JSON line on stderr per request (and per refused grant), for debugging.
//
// Behind a proxy: `provider.proxy = true`, so the URL the provider thinks was called (what a
// DPoP proof's `htu` must name: `ctx.href` less query) is built from `x-forwarded-proto`
// (else http, or https when this server does TLS), and `x-forwarded-host`, else `Host`
// (`:authority`), plus the path. The token endpoint is `/oauth/token`.
//
// mTLS as Auth0's customer-managed edge passes it: the proxy terminates TLS and sends the
// client's leaf certificate in `client-certificate` (PEM, URL-encoded), and
// `client-certificate-ca-verified: SUCCESS` when it verified it against its CAs.
import { X509Certificate, generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";

import { importPinned } from "./modules.mjs";

const { default: Provider, errors } = await importPinned("oidc-provider");

const USAGE =
  "usage: node provider.mjs <port> <clients.json> [--tls <cert.pem> <key.pem>] [--issuer <url>] [--exit-with-stdin]";
/// The one API tokens are for: client_credentials gets a JWT for it without asking.
const RESOURCE = "https://api.example";
const RESOURCE_SCOPE = "read";

function fail(message) {
  console.error(message);
  process.exit(2);
}

const [portText, clientsFile, ...flags] = process.argv.slice(2);
const port = Number(portText);
if (!clientsFile || !Number.isInteger(port) || port < 0 || port > 65535) fail(USAGE);
let tls;
let issuer = "https://oidc.tokengate.test";
let exitWithStdin = false;
for (let i = 0; i < flags.length; i++) {
  if (flags[i] === "--tls" && i + 2 < flags.length) {
    tls = { cert: readFileSync(flags[++i]), key: readFileSync(flags[++i]) };
  } else if (flags[i] === "--issuer" && i + 1 < flags.length) {
    issuer = flags[++i];
  } else if (flags[i] === "--exit-with-stdin") {
    exitWithStdin = true;
  } else {
    fail(USAGE);
  }
}

function clientMetadata(entry) {
  const common = { grant_types: ["client_credentials"], response_types: [], redirect_uris: [] };
  if (typeof entry?.client_secret === "string") {
    // client_secret_basic: oidc-provider takes client_secret_post from such a client too.
    return { ...common, token_endpoint_auth_method: "client_secret_basic", ...entry };
  }
  if (typeof entry?.tls_client_auth_subject_dn === "string") {
    return {
      ...common,
      token_endpoint_auth_method: "tls_client_auth",
      tls_client_certificate_bound_access_tokens: true,
      ...entry,
    };
  }
  fail(`${clientsFile}: a client needs client_secret or tls_client_auth_subject_dn: ${JSON.stringify(entry)}`);
}

const entries = JSON.parse(readFileSync(clientsFile, "utf8"));
if (!Array.isArray(entries)) fail(`${clientsFile}: not a JSON list of clients`);

/// The certificate the edge passed on, or undefined when there is none or it is unreadable.
function clientCertificate(ctx) {
  const header = ctx.get("client-certificate");
  if (!header) return undefined;
  try {
    return new X509Certificate(decodeURIComponent(header));
  } catch {
    return undefined;
  }
}

/// RFC 8705 registers the subject as an RFC 4514 string, most specific RDN first
/// ("CN=a,O=b"); node lists the RDNs in certificate order, one a line ("O=b\nCN=a"). Escaped
/// commas inside a value are not handled: test names do not need them.
function subjectDn(certificate) {
  return certificate.subject.split("\n").reverse().join(",");
}

function certificateSubjectMatches(ctx, property, expected) {
  const certificate = clientCertificate(ctx);
  // Only the subject DN is supported; a client registered by SAN is refused.
  if (!certificate || property !== "tls_client_auth_subject_dn") return false;
  return subjectDn(certificate) === expected.split(/\s*,\s*/).join(",");
}

// A signing key made at each start: the access tokens are JWTs (RS256, oidc-provider's
// default), checkable against /jwks.
const signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });

const provider = new Provider(issuer, {
  clients: entries.map(clientMetadata),
  clientAuthMethods: [
    "client_secret_basic",
    "client_secret_post",
    "tls_client_auth",
    "self_signed_tls_client_auth",
  ],
  jwks: { keys: [{ ...signingKey, kid: "tokengate-test", use: "sig", alg: "RS256" }] },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  routes: { token: "/oauth/token" },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    // Proofs are verified (signature, htm, htu, iat, replay); without a nonceSecret no nonce
    // is ever issued or required.
    dPoP: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: clientCertificate,
      certificateAuthorized: (ctx) => ctx.get("client-certificate-ca-verified") === "SUCCESS",
      certificateSubjectMatches,
    },
    // A resource for every client_credentials request, so each gets a JWT access token whose
    // `cnf` the tests can read (an opaque token would hide it).
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator) {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget(`only ${RESOURCE} is known`);
        return { scope: RESOURCE_SCOPE, accessTokenFormat: "jwt", accessTokenTTL: 3600 };
      },
    },
  },
});
provider.proxy = true;

/// `htm` and `htu` of a DPoP proof, unverified, for the log.
function proofClaims(proof) {
  if (!proof) return undefined;
  try {
    const { htm, htu } = JSON.parse(Buffer.from(proof.split(".")[1], "base64url").toString());
    return { htm, htu };
  } catch {
    return "unreadable";
  }
}

provider.use(async (ctx, next) => {
  await next();
  const certificateHeader = ctx.get("client-certificate");
  const certificate = certificateHeader ? clientCertificate(ctx) : undefined;
  const line = {
    method: ctx.method,
    path: ctx.path,
    status: ctx.status,
    // What the provider takes for the called URL: a proof's htu must equal it (less query).
    href: ctx.href,
    host: ctx.get("host") || undefined,
    x_forwarded_proto: ctx.get("x-forwarded-proto") || undefined,
    x_forwarded_host: ctx.get("x-forwarded-host") || undefined,
    x_forwarded_for: ctx.get("x-forwarded-for") || undefined,
    content_type: ctx.get("content-type") || undefined,
    authorization: ctx.get("authorization").split(" ")[0] || undefined,
    dpop: proofClaims(ctx.get("dpop")),
    client_certificate: certificateHeader ? (certificate ? subjectDn(certificate) : "unreadable") : undefined,
    client_certificate_ca_verified: ctx.get("client-certificate-ca-verified") || undefined,
    client_id: ctx.oidc?.client?.clientId,
    error: ctx.body?.error,
    error_description: ctx.body?.error_description,
  };
  console.error(JSON.stringify(line));
});

for (const event of ["grant.error", "server_error"]) {
  provider.on(event, (_ctx, error) => {
    const { name, message, error_description: description, error_detail: detail } = error;
    console.error(JSON.stringify({ event, name, message, description, detail }));
  });
}

const server = tls ? https.createServer(tls, provider.callback()) : http.createServer(provider.callback());
// Longer than a proxy keeps an idle upstream connection: closing one at node's default 5 s
// races the proxy's next request on it (a reset, a 503 upstream).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.on("error", (error) => fail(`listen: ${error.message}`));
server.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ ready: true, port: server.address().port }));
});

if (exitWithStdin) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("close", () => process.exit(0));
  process.stdin.resume();
}
