// Stub of the IndexedDB wrapper: every table accepts writes and reads back nothing.
function table() {
  const q = {
    equals: () => q,
    toArray: async () => [],
    first: async () => undefined,
    delete: async () => 0,
    count: async () => 0,
  };
  return {
    put: async () => undefined,
    bulkPut: async () => undefined,
    add: async () => undefined,
    get: async () => undefined,
    delete: async () => undefined,
    bulkDelete: async () => undefined,
    update: async () => 0,
    toArray: async () => [],
    where: () => q,
  };
}
const tables = new Map();
export const db = new Proxy(
  { transaction: async (...args) => args[args.length - 1]?.() },
  {
    get(target, prop) {
      if (prop in target || typeof prop === 'symbol') return target[prop];
      if (prop === 'then') return undefined;
      if (!tables.has(prop)) tables.set(prop, table());
      return tables.get(prop);
    },
  },
);
export default db;
