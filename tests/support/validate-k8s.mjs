// Validates Kubernetes documents against Istio's and the Gateway API's published models
// (npm @kubernetes-models/*, generated from their CRD schemas). Input on stdin: a JSON array
// of {file, doc}. Prints one line per document; exits 1 if any is refused or of a kind no
// model covers. Usage: node validate-k8s.mjs <dir holding node_modules>
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modelsDir = process.argv[2];
const packages = ["@kubernetes-models/istio", "@kubernetes-models/gateway-api"];
const documents = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, doc } of documents) {
  const [group, version] = doc.apiVersion.split("/");
  let model;
  for (const pkg of packages) {
    try {
      const module = await import(pathToFileURL(join(modelsDir, "node_modules", pkg, group, version, "index.js")));
      if (module[doc.kind]) {
        model = module[doc.kind];
        break;
      }
    } catch {
      // not this package's group
    }
  }
  if (!model) {
    console.log(`${file}: no model for ${doc.apiVersion} ${doc.kind}`);
    failed++;
    continue;
  }
  try {
    new model(doc).validate();
    console.log(`${file}: ${doc.kind} ${doc.metadata.name} valid`);
  } catch (e) {
    console.log(`${file}: ${doc.kind} ${doc.metadata.name} refused: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
