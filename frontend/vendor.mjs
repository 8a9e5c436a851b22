// Copy the browser files the service ships from node_modules into api/static/vendor/
// (run after `npm ci`: `npm run vendor`). The copies are committed: the service needs no
// network and no node at run time, and the versions are the ones package-lock.json records.
// One change to a copy: ReDoc's bundle shows the Redocly logo from its CDN in the menu's
// "API docs by Redocly" link; the copy points that image at an empty inline SVG instead.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "api", "static", "vendor");
const files = {
  uplot: {
    "dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "dist/uPlot.min.css": "uPlot.min.css",
    LICENSE: "uPlot.LICENSE.txt",
  },
  "swagger-ui-dist": {
    "swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui.css",
    LICENSE: "swagger-ui.LICENSE.txt",
    NOTICE: "swagger-ui.NOTICE.txt",
  },
  redoc: {
    "bundles/redoc.standalone.js": "redoc.standalone.js",
    "bundles/redoc.standalone.js.LICENSE.txt": "redoc.standalone.js.LICENSE.txt",
    LICENSE: "redoc.LICENSE.txt",
  },
};
mkdirSync(out, { recursive: true });
const patches = {
  "redoc.standalone.js": [
    ["https://cdn.redoc.ly/redoc/logo-mini.svg", "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"],
  ],
};
const versions = [], notes = [];
for (const [pkg, map] of Object.entries(files)) {
  const root = join(here, "node_modules", pkg);
  for (const [from, to] of Object.entries(map)) {
    copyFileSync(join(root, from), join(out, to));
    for (const [find, replace] of patches[to] || []) {
      const text = readFileSync(join(out, to), "utf8");
      if (text.split(find).length !== 2) throw new Error(`${to}: expected ${find} once`);
      writeFileSync(join(out, to), text.replace(find, replace));
      notes.push(`${to}: ${find} replaced by an empty inline SVG`);
    }
  }
  versions.push(`${pkg} ${JSON.parse(readFileSync(join(root, "package.json"))).version}`);
}
writeFileSync(join(out, "VERSIONS.txt"), [...versions, ...notes].join("\n") + "\n");
console.log(`vendored into ${out}:\n  ${versions.join("\n  ")}`);
