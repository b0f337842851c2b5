// Copy the built module to where `backchannel serve` serves it: /sdk/backchannel.js.
import { copyFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
copyFileSync(here("../dist/backchannel.js"), here("../../../src/backchannel/server/static/backchannel.js"));
