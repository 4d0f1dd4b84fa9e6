// The `metrics` option of RasEngine.open and its check (no prom-client here: the engine loads the
// metrics only when the option is given).
import * as fs from 'node:fs';
import { invalidArg } from '../errors';

export interface TextfileOptions {
  /** node_exporter's --collector.textfile.directory. */
  textfileDir: string;
  /** The file is DIR/hugetlb-ras-NAME.prom: [A-Za-z0-9_.-], 1..100 characters (e.g. the VM's name). */
  name: string;
}

/** Checks the option before the engine opens. */
export function checkTextfileOptions(o: unknown): TextfileOptions {
  if (typeof o !== 'object' || o === null) throw invalidArg('metrics must be an object like { textfileDir, name }');
  const { textfileDir, name } = o as Partial<TextfileOptions>;
  if (typeof textfileDir !== 'string' || textfileDir.length === 0) throw invalidArg('metrics.textfileDir must be a directory');
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(name)) throw invalidArg('metrics.name must be 1..100 characters of A-Z a-z 0-9 _ . -');
  let st: fs.Stats;
  try {
    st = fs.statSync(textfileDir);
  } catch (err) {
    throw invalidArg(`metrics.textfileDir ${textfileDir}: ${(err as Error).message}`);
  }
  if (!st.isDirectory()) throw invalidArg(`metrics.textfileDir ${textfileDir} is not a directory`);
  return { textfileDir, name };
}

