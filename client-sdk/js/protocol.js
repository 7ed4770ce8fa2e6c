// Aula browser SDK: what the SDK knows of the protocol (signaling/protocol/src/lib.rs): its
// version, the error the server reports, the reasons and limits the other modules act on.
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

/** Protocol version announced in `join`; the server refuses versions it does not speak. */
export const PROTOCOL_VERSION = 1;

/** How often the client pings. The server drops sessions that stay silent much longer. */
export const PING_INTERVAL_MS = 10_000;

/**
 * The server's `left` reason when it ended the session because its media path failed (the
 * protocol's LEFT_PEER_CONNECTION_FAILED): joined again, not given up.
 */
export const REASON_PEER_FAILED = 'peer connection failed';

/** Refusals of a join that another attempt with the same token cannot change. */
export const FINAL_JOIN_ERRORS = ['unauthorized', 'forbidden', 'room_locked', 'unsupported_version'];

/** The protocol's MAX_RENDERED_DIMENSION: larger sizes are refused, so they are capped here. */
export const MAX_RENDERED_DIMENSION = 16384;

/** An error the server reported (`code` is the protocol's ErrorCode, e.g. 'forbidden'). */
export class AulaError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'AulaError';
    this.code = code;
  }
}
