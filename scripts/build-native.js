#!/usr/bin/env node
// Builds the addons with node-gyp (the package's install step). Where the running Node's own
// headers are installed next to it (distribution packages ship them under <prefix>/include/node),
// node-gyp is pointed at them: otherwise it downloads a header tarball, which fails on a machine
// that reaches only package registries, and for a user whose npm config does not set `nodedir`.
// An explicit `npm_config_nodedir` (or --nodedir) still wins.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const args = [require.resolve('node-gyp/bin/node-gyp.js'), process.argv[2] || 'rebuild'];
const prefix = path.dirname(path.dirname(process.execPath));
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync(process.execPath, [...args, ...process.argv.slice(3)], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
