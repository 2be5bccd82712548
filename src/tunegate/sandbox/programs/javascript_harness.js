// The JavaScript harness: loads ./program.js, then the CommonJS tests, and only then writes the
// nonce on the result channel (the fd in argv[2]). tunegate's sandbox (javascript.py) copies it
// into each work directory as harness.js and starts `node harness.js <fd>`, often ahead of time:
// it blocks on stdin until its job arrives.
'use strict';
// Everything the verdict depends on is captured before the program can touch it.
const fs = require('fs');
const Module = require('module');
const writeSync = fs.writeSync;
const exit = process.exit.bind(process);
const fd = Number(process.argv[2]);
// The job arrives on stdin (a pre-started spare waits here): the nonce, the program, its tests.
const job = JSON.parse(fs.readFileSync(0, 'utf8'));
const nonce = job.nonce;
fs.writeFileSync('program.js', job.program);
fs.writeFileSync('tests.js', job.tests);
delete job.nonce;
process.argv.length = 2;
// Frozen before the program loads: stubbing out assert, or intercepting the tests' require of
// it, must not turn failing tests into passing ones.
const assert = require('assert');
for (const target of [assert, assert.strict, require('assert/strict'), Module,
  Module.prototype, Module._extensions]) {
  Object.freeze(target);
}
function pass() {
  writeSync(fd, 'E ' + nonce + '\n');
  exit(0);
}
function fail(err) {
  writeSync(2, String((err && err.stack) || err) + '\n');
  exit(1);
}
// `loaded`, not exit(), guards pass(): a program can make process.exit return (it looks up
// process.reallyExit at call time).
let tests;
let loaded = false;
try {
  require('./program.js');
  tests = require('./tests.js');
  loaded = true;
} catch (err) {
  fail(err);
}
// Synchronous tests (all of tunegate's) have finished here, out of the program's reach. Tests
// that export an async function are awaited; they share the program's globals while they run.
if (loaded && typeof tests === 'function') {
  (async () => tests())().then(pass, fail);
} else if (loaded) {
  pass();
}
