// Prints each entry's size as an application would ship it: bundled
// (react and socket.io-client left out: they are the application's),
// minified by esbuild, then gzip (level 9) and brotli. Run after the build.
//
//   npm run size

import { build } from "esbuild";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TARGET = 6 * 1024;
const entries = [
  ["@switchboard/client", "dist/index.js", TARGET],
  ["@switchboard/client/react (with the client)", "dist/react.js"],
  ["@switchboard/client/react/socket.io", "dist/socket-io.js"],
];

let over = false;
for (const [name, file, limit] of entries) {
  const out = await build({
    entryPoints: [path.join(root, file)],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    external: ["react", "socket.io-client"],
    write: false,
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  const br = brotliCompressSync(code, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  const verdict = limit ? (gz <= limit ? ` (target ${limit} B: ok)` : ` (target ${limit} B: OVER)`) : "";
  if (limit && gz > limit) over = true;
  console.log(`${name}: ${code.length} B minified, ${gz} B min+gzip, ${br} B min+brotli${verdict}`);
}
if (over) process.exit(1);
