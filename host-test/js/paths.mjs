// Where the tests find what the Rust build made, and the shared data.
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "../..");
export const target = path.join(root, "target");
export const shared = process.env.NEWTERMS_SHARED_DATA ?? path.resolve(root, "../shared/data");
export const cli = path.join(target, "release", "newterms");
