// Reads YAML the way Kubernetes does. kubectl and the API server convert YAML to JSON with
// sigs.k8s.io/yaml over go-yaml v2, which is YAML 1.1: unquoted `0777` and `000…0` are
// integers (octal), `yes/no/on/off/y/n` booleans, `1e3` a number. This reads with the npm
// `yaml` package's YAML 1.1 schema (pinned, `testbed::KUBERNETES_PACKAGES`), less the two
// YAML 1.1 types go-yaml v2 leaves as strings in an untyped document: timestamps and
// base-60 numbers (`1:20`).
// Input on stdin: a JSON array of {file, text}. Prints a JSON array of {file, doc}, one per
// YAML document, in order; exits 1 on any YAML error or warning.
// Usage: node k8s-yaml.mjs <dir holding node_modules>
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

// Resolves packages from <dir>/node_modules, as if from a module in <dir>.
const require = createRequire(resolve(process.argv[2], "package.json"));
const YAML = require("yaml");

const goYamlV2Strings = (tag) =>
  tag.tag === "tag:yaml.org,2002:timestamp" || tag.format === "TIME";
const options = {
  version: "1.1",
  customTags: (tags) => tags.filter((tag) => !goYamlV2Strings(tag)),
};

const inputs = JSON.parse(readFileSync(0, "utf8"));
const out = [];
let failed = 0;
for (const { file, text } of inputs) {
  for (const document of YAML.parseAllDocuments(text, options)) {
    const problems = [...document.errors, ...document.warnings];
    if (problems.length) {
      for (const problem of problems) console.error(`${file}: ${problem.message}`);
      failed++;
      continue;
    }
    // JSON, as the API server stores it: a Date or a Map could not get here.
    out.push({ file, doc: JSON.parse(JSON.stringify(document.toJS())) });
  }
}
process.stdout.write(JSON.stringify(out));
process.exit(failed ? 1 : 0);
