// Loads the pinned npm packages of the OpenID harness (testbed::OIDC_PACKAGES) from the
// directory `cargo xtask test` installs them into, named by $TOKENGATE_OIDC_MODULES (the
// npm prefix: the directory holding node_modules; testbed::oidc_modules_dir() sets it).
// ESM ignores NODE_PATH, and these scripts live outside that directory, so a bare
// `import "oidc-provider"` would find nothing: resolve the name as a module in that
// directory would (createRequire), then import the file by its absolute URL. The
// packages' own imports (koa, jose) then resolve from where they lie.
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

export async function importPinned(name) {
  const prefix = process.env.TOKENGATE_OIDC_MODULES;
  if (!prefix) {
    throw new Error("TOKENGATE_OIDC_MODULES is not set (the npm prefix holding node_modules/" + name + ")");
  }
  const require = createRequire(resolve(prefix, "package.json"));
  return import(pathToFileURL(require.resolve(name)).href);
}
