// Stub of the agent registry: no agents.
import { makeStore } from './_runtime.mjs';

export const useAgentRegistry = makeStore(() => ({
  agents: {},
  listAgents: () => [],
  getAgent: () => undefined,
}));
