// The WIT component under jco, a second component host: the contract table gives exactly
// the outputs it gives under wasmtime (which give the core's).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { target } from "./paths.mjs";

const { detect } = await import(path.join(target, "js", "jco", "newterms.js"));
const cases = JSON.parse(fs.readFileSync(path.join(target, "contract-cases.json"), "utf8"));

const STAT_NAMES = {
  noTerm: "no_term",
  outOfIndex: "out_of_index",
  indexUnknown: "index_unknown",
  errorsInvalidJson: "errors.invalid-json",
  errorsNotObject: "errors.not-object",
  errorsWrongType: "errors.wrong-type",
  errorsTooLarge: "errors.too-large",
  errorsBadTime: "errors.bad-time",
  evictedWindow: "evicted_window",
  evictedCapacity: "evicted_capacity",
  termsHeld: "terms_held",
};

test("the contract table through the component under jco", () => {
  let ran = 0;
  for (const c of cases) {
    let d;
    try {
      d = detect.Detector.open(c.rule, c.settings_toml);
    } catch (e) {
      assert.equal(c.config_error !== null, true, `${c.name}: ${e.payload?.message ?? e}`);
      assert.equal(e.payload.key ?? "", c.config_error, c.name);
      continue;
    }
    assert.equal(c.config_error, null, `${c.name} loaded under jco`);
    ran++;
    const inputs = c.inputs.map((b64) => new Uint8Array(Buffer.from(b64, "base64")));
    const per = inputs.map(() => []);
    for (const { input, output } of d.processBatch(inputs)) {
      per[input].push(output.tag === "emit" ? { emit: output.val } : { error: { kind: output.val.kind, message: output.val.message } });
    }
    assert.deepStrictEqual(per, c.outputs, c.name);
    const stats = {};
    for (const [k, v] of Object.entries(d.stats())) stats[STAT_NAMES[k] ?? k] = Number(v);
    assert.deepStrictEqual(stats, c.stats, c.name);
  }
  assert.ok(ran >= 40, `only ${ran} cases ran`);
});
