// The shared test helpers: import them from './helpers' (or '../helpers').
export * from './child';
export * from './data';
export * from './resources';
export * from './time';
