// Aula browser SDK: one RTCPeerConnection of the two (publish or subscribe) with its ICE
// candidate bookkeeping, and `Serial`, which runs one connection's negotiations one at a time
// and in order (each side only ever offers on its own connection, so there is no glare).
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

/** Runs async tasks one after another, so negotiations on one connection never overlap. */
class Serial {
  #tail = Promise.resolve();

  /** Queues `task`; the returned promise settles with it. A failure does not block later tasks. */
  run(task) {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }
}

/**
 * One side of the media: an RTCPeerConnection plus the remote ICE candidates that arrived before
 * its remote description (the browser rejects candidates until then, and the server may trickle
 * its candidates right behind, or even ahead of, the SDP).
 */
export class Peer {
  constructor(target, config, room) {
    this.target = target;
    this.pc = new RTCPeerConnection(config);
    this.serial = new Serial();
    this.pendingCandidates = [];
    this.room = room;
    // Our own candidates for the publish connection wait for the server's answer: the server
    // creates that connection only when it accepts the offer, and a refused offer (a student
    // without the grant) would otherwise have each candidate come back as 'bad_candidate'.
    this.unsentCandidates = target === 'publish' ? [] : null;
    this.pc.addEventListener('icecandidate', (e) => {
      // Chrome ends gathering with an empty candidate string; the protocol has no end-of-candidates.
      if (!e.candidate?.candidate) return;
      const message = { type: 'candidate', target, candidate: e.candidate.toJSON() };
      if (this.unsentCandidates) this.unsentCandidates.push(message);
      else room._send(message);
    });
    this.pc.addEventListener('connectionstatechange', () => {
      room._emit('connectionState', { target, state: this.pc.connectionState });
    });
  }

  async addCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate);
  }

  async setRemoteDescription(description) {
    await this.pc.setRemoteDescription(description);
    const unsent = this.unsentCandidates ?? [];
    this.unsentCandidates = null;
    for (const message of unsent) this.room._send(message);
    const pending = this.pendingCandidates.splice(0);
    for (const candidate of pending) await this.pc.addIceCandidate(candidate);
  }
}
