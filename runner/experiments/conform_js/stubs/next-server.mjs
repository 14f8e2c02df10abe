// Stub of Next.js's server response helper for the route probe: a JSON answer is its body and
// its status, nothing else.
export const NextResponse = {
  json(body, init = {}) {
    return { body, status: init.status ?? 200, headers: init.headers ?? {} };
  },
};
