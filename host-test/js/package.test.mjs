// The npm package (wasm-bindgen): the contract table gives the core's answers, real data
// gives the command's alerts, and snapshots cross between Node and wasmtime.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { target, shared, cli } from "./paths.mjs";

const require = createRequire(import.meta.url);
const { Detector } = require(path.join(target, "js", "pkg", "newterms.js"));
const cases = JSON.parse(fs.readFileSync(path.join(target, "contract-cases.json"), "utf8"));

test("the contract table gives the core's outputs and statistics", () => {
  let ran = 0;
  for (const c of cases) {
    if (c.config_error !== null) {
      assert.throws(() => new Detector(c.rule, c.settings), (e) => {
        assert.equal(e.kind, "config", c.name);
        assert.equal(e.key ?? "", c.config_error, c.name);
        return true;
      });
      continue;
    }
    // JavaScript strings cannot carry invalid UTF-8: those cases are the core's alone.
    if (!c.utf8) continue;
    ran++;
    const d = new Detector(c.rule, c.settings);
    c.inputs.forEach((b64, i) => {
      const got = d.process(Buffer.from(b64, "base64").toString("utf8"));
      const want = c.outputs[i].map((o) => (o.emit !== undefined ? { record: JSON.parse(o.emit) } : { error: o.error }));
      assert.deepStrictEqual(got, want, `${c.name}, input ${i}`);
    });
    assert.deepStrictEqual(d.stats(), c.stats, c.name);
  }
  assert.ok(ran >= 40, `only ${ran} cases ran`);
});

test("a rule pack gives the core's alerts and per-rule counters", () => {
  const pack = JSON.parse(fs.readFileSync(path.join(target, "pack-case.json"), "utf8"));
  assert.ok(pack.rules.length >= 50);
  const d = new Detector(pack.rules);
  const uuids = [];
  for (const r of pack.records) {
    for (const o of d.process(r)) if (o.record) uuids.push(o.record["kibana.alert.uuid"]);
  }
  assert.ok(uuids.length > 100, `${uuids.length} alerts`);
  assert.deepStrictEqual(uuids, pack.alerts);
  assert.deepStrictEqual(d.ruleStats(), pack.rule_stats);
  assert.throws(() => new Detector([pack.rules[0], pack.rules[0]]), (e) => e.kind === "config" && /rules\[1\]/.test(e.message));
});

test("options are the settings' keys: null leaves one unset, an unknown one names itself", () => {
  const record = { eventTime: "2026-01-01T00:00:00Z", eventSource: "sts.amazonaws.com", eventName: "GetCallerIdentity", userIdentity: { type: "IAMUser", arn: "arn:aws:iam::1:user/a" } };
  const unset = new Detector(undefined, { max_terms: null, output: null, exceptions: ["user_agent.original: never"] });
  assert.equal(unset.process(record).length, 1, "null is the default, not an error");
  const annotate = new Detector(undefined, { output: "annotate", max_terms: 1 });
  assert.ok(annotate.process(record)[0].record["kibana.alert.uuid"]);
  assert.throws(() => new Detector(undefined, { max_term: 5 }), (e) => e.kind === "config" && e.key === "newterms.max_term");
  assert.throws(() => new Detector(undefined, { max_terms: 0 }), (e) => e.kind === "config" && e.key === "newterms.max_terms" && /at least 1/.test(e.message));
  assert.throws(() => new Detector(undefined, { output: 3 }), (e) => e.kind === "config" && e.key === "newterms.output");
  for (const bad of ["max_terms = 5", [1], 7]) {
    assert.throws(() => new Detector(undefined, bad), (e) => e.kind === "usage" && /plain object/.test(e.message));
  }
});

test("a bad record never throws away the batch", () => {
  const d = new Detector();
  const good = { eventTime: "2026-01-01T00:00:00Z", eventSource: "sts.amazonaws.com", eventName: "GetCallerIdentity", userIdentity: { type: "IAMUser", arn: "arn:aws:iam::1:user/a" } };
  const out = d.processBatch(["[1]", good, '{"eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity",']);
  assert.deepStrictEqual(out.map((o) => [o.input, o.error?.kind ?? "record"]), [[0, "not-object"], [1, "record"], [2, "invalid-json"]]);
  assert.throws(() => d.process(42), /string or a plain object/);
});

function files(dir) {
  const d = path.join(shared, "cloudtrail", dir);
  return fs.readdirSync(d).filter((f) => f.endsWith(".json")).sort().map((f) => path.join(d, f));
}

function cliAlerts(paths, extra = []) {
  const out = execFileSync(cli, ["run", ...extra, ...paths], { stdio: ["ignore", "pipe", "ignore"] }).toString();
  return out.split("\n").filter(Boolean).map((l) => JSON.parse(l)["kibana.alert.uuid"]);
}

for (const [dir, count] of [["invictus-ir", 1], ["stratus-red-team", 2]]) {
  test(`${dir} gives the same alerts as the newterms command`, () => {
    const paths = files(dir);
    const d = new Detector();
    const uuids = [];
    for (const p of paths) {
      for (const o of d.process(fs.readFileSync(p, "utf8"))) {
        assert.ok(o.record, JSON.stringify(o.error));
        uuids.push(o.record["kibana.alert.uuid"]);
      }
    }
    assert.equal(uuids.length, count);
    assert.deepStrictEqual(uuids, cliAlerts(paths));
  });
}

test("an edge in matches mode and a detector reading its matches give the command's alerts", () => {
  const paths = files("stratus-red-team");
  const edge = new Detector(undefined, { output: "matches" });
  const consumer = new Detector(undefined, { input: "matches" });
  const uuids = [];
  let documents = 0;
  for (const p of paths) {
    for (const o of edge.process(fs.readFileSync(p, "utf8"))) {
      assert.ok(o.record, JSON.stringify(o.error));
      assert.match(o.record.newterms_key, /^[0-9a-f]{32}$/);
      documents++;
      for (const a of consumer.process(JSON.stringify(o.record))) {
        assert.ok(a.record, JSON.stringify(a.error));
        uuids.push(a.record["kibana.alert.uuid"]);
      }
    }
  }
  assert.equal(edge.stats().terms_held, 0, "the edge keeps no table");
  assert.ok(documents >= uuids.length && uuids.length > 0, `${documents} matches, ${uuids.length} alerts`);
  assert.deepStrictEqual(uuids, cliAlerts(paths));
});

test("a snapshot taken in Node restores in wasmtime, and the other way round", () => {
  const paths = files("invictus-ir");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "newterms-js-"));
  const d = new Detector();
  for (const p of paths) d.process(fs.readFileSync(p, "utf8"));
  const fromNode = path.join(dir, "node.state");
  fs.writeFileSync(fromNode, d.snapshot());
  assert.deepStrictEqual(cliAlerts(paths, ["--state", fromNode]), [], "wasmtime restored Node's table");

  const fromCli = path.join(dir, "cli.state");
  assert.equal(cliAlerts(paths, ["--state", fromCli]).length, 1);
  const restored = Detector.restore(undefined, fs.readFileSync(fromCli));
  for (const p of paths) assert.deepStrictEqual(restored.process(fs.readFileSync(p, "utf8")), [], "Node restored wasmtime's table");
  assert.deepStrictEqual(Buffer.from(restored.snapshot()), fs.readFileSync(fromCli), "the same bytes in both builds");
  fs.rmSync(dir, { recursive: true });
});

test("npm pack gives an installable package, and the example streams alerts with it", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "newterms-pack-"));
  const tgz = execFileSync("npm", ["pack", path.join(target, "js", "pkg"), "--pack-destination", dir, "--silent"], { cwd: dir })
    .toString()
    .trim()
    .split("\n")
    .pop();
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--offline", "--prefix", dir, path.join(dir, tgz)], { stdio: "ignore" });
  const example = path.join(target, "..", "examples", "node", "alerts.mjs");
  const sample = path.join(target, "..", "examples", "data", "cloudtrail-sample.ndjson");
  const env = { ...process.env, NODE_PATH: path.join(dir, "node_modules") };
  delete env.NEWTERMS_PKG;
  const out = execFileSync("node", [example], { input: fs.readFileSync(sample), env, stdio: ["pipe", "pipe", "ignore"] }).toString();
  const terms = out.split("\n").filter(Boolean).map((l) => JSON.parse(l)["kibana.alert.new_terms"][0]);
  assert.deepStrictEqual(terms, [
    "arn:aws:iam::111122223333:user/alice",
    "arn:aws:iam::111122223333:user/bob",
    "arn:aws:sts::111122223333:federated-user/ci-bot",
  ]);
  fs.rmSync(dir, { recursive: true });
});

// A pack exported by the Rust tests: every rule's alerts as the core gives them.
for (const [file, what, min] of [
  ["wide-pack-case.json", "a pack of 200 generated rules over 400 fields", 200],
  ["elastic-case.json", "every new_terms rule of Elastic's detection-rules as one pack", 240],
]) {
  const at = path.join(target, file);
  test(`${what} gives the core's alerts`, (t) => {
    if (!fs.existsSync(at)) {
      t.skip(`SKIPPED: no ${at} (the Rust tests write it)`);
      console.error(`SKIPPED: ${what}: no ${at}`);
      return;
    }
    const c = JSON.parse(fs.readFileSync(at, "utf8"));
    assert.ok(c.rules.length >= min, `${c.rules.length} rules`);
    const d = new Detector(c.rules);
    const uuids = [];
    for (const r of c.records) {
      for (const o of d.process(r)) if (o.record) uuids.push(o.record["kibana.alert.uuid"]);
    }
    assert.deepStrictEqual(uuids, c.alerts);
  });
}
