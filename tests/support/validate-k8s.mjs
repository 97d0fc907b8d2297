// Validates Kubernetes documents against Istio's, the Gateway API's and Kubernetes' own
// published models (npm @kubernetes-models/*, kubernetes-models, generated from their CRD
// and OpenAPI schemas). Input on stdin: a JSON array of {file, doc}. Prints one line per
// document; exits 1 if any is refused or of a kind no model covers.
// A ConfigMap's `deployment` and `service` entries (the strategic-merge patches Istio applies
// to the Deployment and Service it makes for a Gateway whose infrastructure.parametersRef
// names the ConfigMap) are YAML themselves: they are read and validated as a Deployment and
// a Service, so the ConfigMap is valid only if they are.
// Usage: node validate-k8s.mjs <dir holding node_modules>
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const modelsDir = process.argv[2];
const packages = ["@kubernetes-models/istio", "@kubernetes-models/gateway-api", "kubernetes-models"];
const YAML = createRequire(resolve(modelsDir, "package.json"))("yaml");

async function modelOf(apiVersion, kind) {
  // The core group has no name: "v1" is its version.
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  for (const pkg of packages) {
    try {
      const path = join(modelsDir, "node_modules", pkg, ...[group, version].filter(Boolean), "index.js");
      const module = await import(pathToFileURL(path));
      if (module[kind]) return module[kind];
    } catch {
      // not this package's group
    }
  }
  return undefined;
}

// The object a patch gives when applied to the least valid object of its kind.
const overlays = {
  deployment: {
    apiVersion: "apps/v1",
    kind: "Deployment",
    base: { spec: { selector: { matchLabels: {} }, template: { spec: { containers: [] } } } },
  },
  service: { apiVersion: "v1", kind: "Service", base: { spec: {} } },
};

function merged(base, patch) {
  if (typeof base !== "object" || typeof patch !== "object" || Array.isArray(patch) || !base || !patch) {
    return patch;
  }
  const out = { ...base };
  for (const [key, value] of Object.entries(patch)) out[key] = merged(base[key], value);
  return out;
}

async function validateOverlays(doc) {
  for (const [key, text] of Object.entries(doc.data ?? {})) {
    const overlay = overlays[key];
    if (!overlay) continue;
    const patch = YAML.parse(text, { version: "1.1" });
    const model = await modelOf(overlay.apiVersion, overlay.kind);
    const object = merged(overlay.base, patch);
    try {
      new model({ apiVersion: overlay.apiVersion, kind: overlay.kind, metadata: { name: "overlay" }, ...object }).validate();
    } catch (e) {
      throw new Error(`data.${key} (a ${overlay.kind} patch): ${e.message}`);
    }
  }
}

const documents = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, doc } of documents) {
  const model = await modelOf(doc.apiVersion, doc.kind);
  if (!model) {
    console.log(`${file}: no model for ${doc.apiVersion} ${doc.kind}`);
    failed++;
    continue;
  }
  try {
    new model(doc).validate();
    if (doc.apiVersion === "v1" && doc.kind === "ConfigMap") await validateOverlays(doc);
    console.log(`${file}: ${doc.kind} ${doc.metadata.name} valid`);
  } catch (e) {
    console.log(`${file}: ${doc.kind} ${doc.metadata.name} refused: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
