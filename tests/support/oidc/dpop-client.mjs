// A real OAuth client asking for a DPoP-bound token (RFC 9449) with client credentials:
// panva's oauth4webapi (pinned, testbed::OIDC_PACKAGES), through its own API: a fresh ES256
// key pair, its DPoP handle, clientCredentialsGrantRequest, processClientCredentialsResponse.
//
// usage: node dpop-client.mjs <token_url> <client_id> <client_secret> [name=value ...]
//                             [--htu-mismatch] [--basic] [--insecure]
//   name=value      extra form parameters (scope, resource, ...).
//   --htu-mismatch  the proof names another URL (same origin, path /elsewhere/token) than the
//                   one called: a provider that checks htu must refuse it (invalid_dpop_proof).
//   --basic         client_secret_basic instead of client_secret_post.
//   --insecure      allow an http:// token URL (oauth4webapi refuses one otherwise).
// A private CA for an https:// URL: NODE_EXTRA_CA_CERTS=<ca.pem> (fetch trusts it).
// Packages: $TOKENGATE_OIDC_MODULES (see modules.mjs).
//
// Prints one JSON line: {"status": N, "body": {...}} for any answer (the body as the server
// sent it: oauth4webapi lowercases token_type in what it returns), with "jkt" (the thumbprint
// of the proof key) on a success, or "error" besides when oauth4webapi refused the answer;
// {"error": "..."} when no answer came. Exit 0 when an answer came, 1 otherwise.
import { importPinned } from "./modules.mjs";

const oauth = await importPinned("oauth4webapi");

const USAGE =
  "usage: node dpop-client.mjs <token_url> <client_id> <client_secret> [name=value ...] [--htu-mismatch] [--basic] [--insecure]";

function fail(message) {
  console.log(JSON.stringify({ error: message }));
  process.exit(1);
}

const [tokenUrl, clientId, clientSecret, ...rest] = process.argv.slice(2);
if (!tokenUrl || !clientId || clientSecret === undefined) {
  console.error(USAGE);
  process.exit(2);
}
const parameters = new URLSearchParams();
let htuMismatch = false;
let basic = false;
let insecure = false;
for (const arg of rest) {
  if (arg === "--htu-mismatch") htuMismatch = true;
  else if (arg === "--basic") basic = true;
  else if (arg === "--insecure") insecure = true;
  else if (arg.includes("=")) parameters.append(arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1));
  else {
    console.error(USAGE);
    process.exit(2);
  }
}

// No discovery: the token endpoint is all a client_credentials request needs. The issuer
// is not checked on an access-token answer without an id_token.
const url = new URL(tokenUrl);
const as = { issuer: url.origin, token_endpoint: url.href };
const client = { client_id: clientId };
const authentication = basic ? oauth.ClientSecretBasic(clientSecret) : oauth.ClientSecretPost(clientSecret);
const keyPair = await oauth.generateKeyPair("ES256");
const dpopOptions = htuMismatch
  ? { [oauth.modifyAssertion]: (_header, payload) => (payload.htu = new URL("/elsewhere/token", url).href) }
  : {};
const DPoP = oauth.DPoP(client, keyPair, dpopOptions);

let response;
try {
  response = await oauth.clientCredentialsGrantRequest(as, client, authentication, parameters, {
    DPoP,
    signal: AbortSignal.timeout(15_000),
    [oauth.allowInsecureRequests]: insecure,
  });
} catch (error) {
  fail(`${error.name}: ${error.message}${error.cause ? ` (${error.cause.message ?? error.cause})` : ""}`);
}

const text = await response.clone().text();
let body;
try {
  body = JSON.parse(text);
} catch {
  body = text;
}
const answer = { status: response.status, body };
try {
  await oauth.processClientCredentialsResponse(as, client, response);
  answer.jkt = await DPoP.calculateThumbprint();
} catch (error) {
  // An OAuth error answer (a ResponseBodyError, or a challenge on a 401): its body is
  // already in the answer.
  const oauthError = error instanceof oauth.ResponseBodyError || error instanceof oauth.WWWAuthenticateChallengeError;
  if (!oauthError) answer.error = `${error.name}: ${error.message}`;
}
console.log(JSON.stringify(answer));
