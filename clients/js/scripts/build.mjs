// Builds the package: TypeScript -> dist/ (ES modules and .d.ts, by tsc),
// then writes dist/index.js, with a header, to the server's web folder
// (crates/server/web/switchboard.js, committed: the server embeds it and
// the web chat imports it, so the page needs no npm).
//
//   node scripts/build.mjs          build and write the web copy
//   node scripts/build.mjs --check  build and fail if the committed web copy differs

import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const webCopy = path.resolve(root, "..", "..", "crates", "server", "web", "switchboard.js");
const check = process.argv.includes("--check");

rmSync(path.join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", path.join(root, "tsconfig.json")], {
  stdio: "inherit",
});

const header = `// Generated from clients/js/src/index.ts (@switchboard/client) by
// \`npm run build --prefix clients/js\`: do not edit here. The web chat
// imports it; \`npm run check:web --prefix clients/js\` fails when it differs
// from a fresh build.

`;
const fresh = header + readFileSync(path.join(root, "dist", "index.js"), "utf8");

if (check) {
  let committed = "";
  try {
    committed = readFileSync(webCopy, "utf8");
  } catch {
    /* missing: differs */
  }
  if (committed !== fresh) {
    console.error(`${path.relative(process.cwd(), webCopy)} differs from a fresh build of clients/js: run \`npm run build --prefix clients/js\` and commit it`);
    process.exit(1);
  }
  console.log(`${path.relative(process.cwd(), webCopy)} matches a fresh build of clients/js`);
} else {
  writeFileSync(webCopy, fresh);
  console.log(`built dist/ and ${path.relative(process.cwd(), webCopy)}`);
}
