#!/usr/bin/env node
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// kcopyd-example.js: run one job on a kcopydfs mount from Node.js, with
// nothing but the fs module (kcopydfs(5) is plain files).
//
//   node contrib/node/kcopyd-example.js MOUNT 'copy from=/dev/loop0 to=/dev/loop1'
//
// It submits the description through MOUNT/clone, prints the job's
// progress on stderr once a second (with how many of the sectors done were
// zero ranges: sectors_zero, from daemons that have it), waits for the end
// by reading the job's wait file, prints the final status on stdout and
// removes the job.  The
// first SIGINT or SIGTERM cancels the job (the final status then says
// cancelled).  Exit status: 0 done, 1 failed or cancelled, 2 bad usage or
// a description the daemon refused (the reason, the job's error line, on
// stderr).
//
// Tested by tests/test-bindings-node.sh (make check).
'use strict';

const fs = require('fs');
const path = require('path');

// parseStatus(text): the "key: value" lines of a status or wait file, as an object.
function parseStatus(text) {
  const status = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(': ');
    if (colon > 0) status[line.slice(0, colon)] = line.slice(colon + 2);
  }
  return status;
}

// submit(mount, description): the job's directory.  Opening clone makes a
// new job tied to the descriptor (removed if we die before the write).  ctl
// takes lines: the description ends in a newline (a line without one is
// never run), and one writeSync writes it whole, so a refusal is that
// call's error.  Throws
// the write's error, with .reason (the job's error line), if refused.
function submit(mount, description) {
  const fd = fs.openSync(path.join(mount, 'clone'), 'r+');
  try {
    const number = Buffer.alloc(32);
    const jobDir = path.join(mount, 'jobs', number.toString('utf8', 0, fs.readSync(fd, number, 0, 32, 0)).trim());
    try {
      fs.writeSync(fd, description.replace(/\n$/, '') + '\n');
    } catch (error) {
      error.reason = parseStatus(fs.readFileSync(path.join(jobDir, 'status'), 'utf8')).error;
      fs.rmdirSync(jobDir);   // the refused job is idle: it goes at once
      throw error;
    }
    return jobDir;
  } finally {
    fs.closeSync(fd);         // the job stays: something was written to it
  }
}

// waitFor(jobDir): a promise of the final status.  The read of wait blocks
// (in libuv's thread pool, not in the event loop) until the job has ended;
// a signal may interrupt it (EINTR), and then it is read again.
async function waitFor(jobDir) {
  for (;;) {
    try {
      return parseStatus(await fs.promises.readFile(path.join(jobDir, 'wait'), 'utf8'));
    } catch (error) {
      if (error.code !== 'EINTR') throw error;
    }
  }
}

async function main() {
  const [mount, description] = process.argv.slice(2);
  if (process.argv.length !== 4 || !mount || !description) {
    console.error('usage: kcopyd-example.js MOUNT DESCRIPTION');
    return 2;
  }
  let jobDir;
  try {
    jobDir = submit(mount, description);
  } catch (error) {
    if (error.reason) {
      console.error(`kcopyd-example: refused (${error.code}): ${error.reason}`);
    } else if (error.code === 'ENOENT' && error.path === path.join(mount, 'clone')) {
      console.error(`kcopyd-example: ${mount}: not a kcopydfs mount (no ${error.path})`);
    } else {
      console.error(`kcopyd-example: ${error.message}`);
    }
    return 2;
  }
  console.error(`kcopyd-example: job ${jobDir}`);

  let cancelled = false;
  const cancel = (signal) => {
    if (cancelled) return;
    cancelled = true;
    console.error(`kcopyd-example: ${signal}: cancelling`);
    fs.writeFileSync(path.join(jobDir, 'ctl'), 'cancel\n');
  };
  process.on('SIGINT', cancel);
  process.on('SIGTERM', cancel);
  const progress = setInterval(() => {
    fs.readFile(path.join(jobDir, 'status'), 'utf8', (error, text) => {
      if (error) return;
      const status = parseStatus(text);
      const zeros = status.sectors_zero === undefined ? '' : ` (${status.sectors_zero} sectors of zeros)`;
      console.error(`kcopyd-example: progress ${status.progress}${zeros}`);
    });
  }, 1000);

  let status;
  try {
    status = await waitFor(jobDir);
  } finally {
    clearInterval(progress);
  }
  for (const [key, value] of Object.entries(status)) console.log(`${key}: ${value}`);
  fs.rmdirSync(jobDir);
  return status.state === 'done' ? 0 : 1;
}

main().then((code) => process.exit(code), (error) => {
  console.error(`kcopyd-example: ${error.message}`);
  process.exit(1);
});
