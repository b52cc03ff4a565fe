#!/usr/bin/env node
// Alerts from CloudTrail records with the newterms npm package, streaming.
//
//   node examples/node/alerts.mjs [--rule rule.toml] [FILE...]   (no FILE: stdin)
//
// NDJSON (one record a line) is processed line by line as it arrives, never held whole.
// A file that is one JSON document (a CloudTrail delivery file {"Records": [...]}, an
// array) is processed as one input once read, since it cannot be split before it is parsed.
// Alerts go to stdout as NDJSON, per-record errors to stderr.
import fs from "node:fs";
import readline from "node:readline";
import zlib from "node:zlib";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Detector } = require(process.env.NEWTERMS_PKG ?? "newterms");

const args = process.argv.slice(2);
let rule;
if (args[0] === "--rule") {
  rule = fs.readFileSync(args[1], "utf8");
  args.splice(0, 2);
}
const detector = new Detector(rule);

function emit(outputs, where) {
  for (const o of outputs) {
    if (o.record) process.stdout.write(JSON.stringify(o.record) + "\n");
    else console.error(`${where}: ${o.error.kind}: ${o.error.message}`);
  }
}

async function run(name) {
  let stream = name === "-" ? process.stdin : fs.createReadStream(name);
  if (name.endsWith(".gz")) stream = stream.pipe(zlib.createGunzip());
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  let n = 0;
  let document = null; // the lines of a whole-document file, once we know it is one
  for await (const line of lines) {
    n++;
    if (document !== null) {
      document.push(line);
    } else if (n === 1 && !isCompleteJson(line)) {
      document = [line];
    } else if (line.trim() !== "") {
      emit(detector.process(line), `${name}:${n}`);
    }
  }
  if (document !== null) emit(detector.process(document.join("\n")), name);
}

function isCompleteJson(line) {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return line.trim() === "";
  }
}

for (const name of args.length ? args : ["-"]) await run(name);
const s = detector.stats();
console.error(`newterms: records=${s.records} matched=${s.matched} alerts=${s.alerts} terms_held=${s.terms_held}`);
