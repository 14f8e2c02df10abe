// What an auto-stubbed or missing name is: a recorded no-op whose use is a harness error
// (see _runtime.mjs unstubbed()).
export { unstubbed } from './_runtime.mjs';
