'use strict';
// Loaded by scripts/client-suites.sh with `node --require` into every amqplib test file. amqplib's
// own files are not changed; this only
//  1. points the tests at the broker under test: they connect to amqp://localhost and
//     amqp://[::1] (port 5672, hard-coded); a loopback connection to port 5672 goes to
//     CLIENT_SUITES_PORT instead (connections to other ports, e.g. the tests' own fake servers,
//     are left alone);
//  2. gives every test and hook a timeout of CLIENT_SUITES_TEST_TIMEOUT_MS, so a test that hangs
//     fails by itself and the rest of the file still runs (node 20's --test-timeout applies to a
//     whole file as well as to each test in it);
//  3. skips, with the reason, the tests listed in CLIENT_SUITES_EXCLUDE: lines "id<TAB>reason",
//     where id is "file > describe > ... > test name".
const net = require('node:net');
const path = require('node:path');
const nodeTest = require('node:test');

const port = Number(process.env.CLIENT_SUITES_PORT);
if (!port) throw new Error('node-preload.js: CLIENT_SUITES_PORT is not set');
const LOOPBACK = new Set([undefined, 'localhost', '127.0.0.1', '::1']);
const connect = net.connect;
net.connect = net.createConnection = function (...args) {
  const o = args[0];
  if (o && typeof o === 'object' && Number(o.port) === 5672 && LOOPBACK.has(o.host)) {
    args[0] = { ...o, port };
  }
  return connect.apply(this, args);
};

const timeout = Number(process.env.CLIENT_SUITES_TEST_TIMEOUT_MS || 5000);
const excluded = new Map();
for (const line of (process.env.CLIENT_SUITES_EXCLUDE || '').split('\n')) {
  const tab = line.indexOf('\t');
  if (tab > 0) excluded.set(line.slice(0, tab), line.slice(tab + 1));
}
const file = path.basename(process.argv[1] || '');
const suites = [];

// it/test/describe take (name?, options?, fn?).
function parse(args) {
  let [name, options, fn] = args;
  if (typeof name === 'function') [name, options, fn] = [name.name, {}, name];
  else if (name && typeof name === 'object') [name, options, fn] = [undefined, name, options];
  else if (typeof options === 'function') [options, fn] = [{}, options];
  return [name, { ...(options || {}) }, fn];
}

function exclusion(name, options) {
  const reason = excluded.get([file, ...suites, name].join(' > '));
  if (reason !== undefined) options.skip = `excluded: ${reason}`;
}

function wrapTest(orig) {
  const wrapped = function (...args) {
    const [name, options, fn] = parse(args);
    exclusion(name, options);
    return orig.call(this, name, { timeout, ...options }, fn);
  };
  return Object.assign(wrapped, orig);
}

function wrapSuite(orig) {
  const wrapped = function (...args) {
    const [name, options, fn] = parse(args);
    exclusion(name, options);
    const body =
      fn &&
      function (...a) {
        suites.push(name);
        try {
          return fn.apply(this, a);
        } finally {
          suites.pop();
        }
      };
    return orig.call(this, name, options, body);
  };
  return Object.assign(wrapped, orig);
}

function wrapHook(orig) {
  return function (fn, options) {
    return orig.call(this, fn, { timeout, ...(options || {}) });
  };
}

nodeTest.it = wrapTest(nodeTest.it);
nodeTest.test = wrapTest(nodeTest.test);
nodeTest.describe = wrapSuite(nodeTest.describe);
nodeTest.suite &&= wrapSuite(nodeTest.suite);
for (const hook of ['before', 'after', 'beforeEach', 'afterEach']) {
  nodeTest[hook] = wrapHook(nodeTest[hook]);
}
