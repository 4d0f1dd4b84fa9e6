#!/usr/bin/env node
// `prepare`: compiles the TypeScript in a checkout (npm install there). In an installed copy of the
// package (no tsconfig.json: dist/ is in the tarball already) there is nothing to do; npm may run
// `prepare` for a package installed from a tarball file, where no TypeScript compiler is around.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (!fs.existsSync(path.join(root, 'tsconfig.json'))) process.exit(0);
const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
