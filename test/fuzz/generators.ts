// The fuzz generators: hostile values (odd numbers, wrong types, harmless strings) and offsets.
import fc from 'fast-check';
import { MiB, SUB } from '../helpers';

const ODD_NUMBERS = [
  -1, -0, 0.5, 1.5, -4096, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 53, 2 ** 53 + 2, 2 ** 64,
  Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, Number.EPSILON,
];
export const oddNumber = fc.oneof(fc.constantFrom(...ODD_NUMBERS), fc.double(), fc.integer({ min: -(2 ** 31), max: -1 }));
// Wrong types, strings excluded: a string where a path is expected is a (relative) path, and a
// journal at a random path would be created (in the current directory): see harmlessString.
export const wrongTypeNotString = fc.oneof(
  fc.boolean(),
  fc.constantFrom(null, undefined),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
  fc.constantFrom<unknown>(
    Symbol('hostile'),
    {},
    [],
    [4096],
    () => 4096,
    new Date(0),
    Buffer.alloc(2),
    { valueOf: () => 4096 },
    new Number(4096),
    Object.create(null),
  ),
);
/** Strings that are safe to hand to anything that takes a path: they cannot name a creatable file. */
export const harmlessString = fc.oneof(
  fc.constantFrom('', '\0', 'a\0b', '/proc/self/nonexistent/x', '/dev/null/x'),
  fc.string({ maxLength: 6 }).map((s) => `/proc/self/nonexistent/${s}`),
);
export const wrongType = fc.oneof(
  wrongTypeNotString,
  harmlessString,
  fc.constantFrom('4096', '0x200000', 'auto', 'simulate'),
  fc.string({ maxLength: 6 }).map((s) => `not-a-number ${s}`),
);
export const hostile = fc.oneof(oddNumber, wrongType);

/** A safe integer that would ask for more memory than a test may take (reserve, region size). */
export const bigValid = (v: unknown, limit: number) => typeof v === 'number' && Number.isSafeInteger(v) && v > limit;

export function offsetsIn(size: number, extra: number[] = []) {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0, 1, 7, 4095, 4096, size - 1, size, size + 1, 2 * MiB - 1, 2 * MiB, ...extra) },
    { weight: 3, arbitrary: fc.nat({ max: size + 2 * SUB }) },
    { weight: 2, arbitrary: hostile },
  );
}
