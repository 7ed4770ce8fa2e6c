// Aula browser SDK: rendered sizes. Finds the <video> elements that show remote tracks, watches
// their size and visibility, and sends `track_settings` so that the server forwards no larger a
// simulcast layer than is shown, and nothing while a video is not shown (see "Rendered sizes"
// in aula.js's header).
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

import { MAX_RENDERED_DIMENSION } from './protocol.js';

/**
 * How long rendered sizes settle before `track_settings` goes out: a window drag or a layout
 * change sends one message per video, not one per animation frame.
 */
const RENDERED_SIZE_DEBOUNCE_MS = 300;

/**
 * A video this close to the viewport counts as shown, so that one scrolled into view has usually
 * been resumed already (the server needs a keyframe from the publisher to restart it).
 */
const IN_VIEW_MARGIN = '200px';

/**
 * Sends `track_settings` for the remote videos the page shows (see "Rendered sizes" in aula.js's header).
 *
 * The page attaches tracks itself, so elements are found through the media events a <video>
 * fires when its `srcObject` changes (`loadstart` when set, `emptied` when replaced or cleared),
 * caught on the document in the capture phase since they do not bubble. Each element found is
 * watched with a ResizeObserver and an IntersectionObserver; any change (and the tab's
 * visibility) schedules one debounced pass over all elements.
 */
export class RenderedSizes {
  /** Watched <video> elements and the track sid each shows. */
  #elements = new Map();
  /** The last size sent per track sid ('640x360'); null to send it again whatever it is. */
  #sent = new Map();
  /** What the IntersectionObserver last said of each element (absent: nothing yet). */
  #inView = new WeakMap();
  #timer = null;
  #resizes = new ResizeObserver(() => this.#schedule());
  #intersections = new IntersectionObserver((entries) => {
    for (const entry of entries) this.#inView.set(entry.target, entry.isIntersecting);
    this.#schedule();
  }, { rootMargin: IN_VIEW_MARGIN });
  #onMediaEvent = (e) => this.#check(e.target);
  #onVisibility = () => this.#schedule();
  #send;
  #sidOf;

  /**
   * @param {(msg: object) => void} send sends a protocol message
   * @param {(srcObject: any) => string|null} sidOf the remote video track sid an element shows
   */
  constructor(send, sidOf) {
    this.#send = send;
    this.#sidOf = sidOf;
    document.addEventListener('loadstart', this.#onMediaEvent, true);
    document.addEventListener('emptied', this.#onMediaEvent, true);
    document.addEventListener('visibilitychange', this.#onVisibility);
  }

  /** The remote track went away: forget it silently (the server would refuse its size). */
  forget(sid) {
    this.#sent.delete(sid);
    for (const [el, shown] of this.#elements) if (shown === sid) this.#unwatch(el);
  }

  /** Sends every known size again on the next pass, changed or not. */
  resendAll() {
    for (const sid of this.#sent.keys()) this.#sent.set(sid, null);
    this.#schedule();
  }

  close() {
    clearTimeout(this.#timer);
    document.removeEventListener('loadstart', this.#onMediaEvent, true);
    document.removeEventListener('emptied', this.#onMediaEvent, true);
    document.removeEventListener('visibilitychange', this.#onVisibility);
    this.#resizes.disconnect();
    this.#intersections.disconnect();
    this.#elements.clear();
  }

  /** Starts, moves or stops watching `el` after its `srcObject` changed. */
  #check(el) {
    if (!(el instanceof HTMLVideoElement)) return;
    const sid = this.#sidOf(el.srcObject);
    if (sid === (this.#elements.get(el) ?? null)) return;
    if (sid) {
      this.#elements.set(el, sid);
      this.#resizes.observe(el);
      this.#intersections.observe(el);
    } else {
      this.#unwatch(el);
    }
    this.#schedule();
  }

  #unwatch(el) {
    this.#elements.delete(el);
    this.#resizes.unobserve(el);
    this.#intersections.unobserve(el);
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#flush(), RENDERED_SIZE_DEBOUNCE_MS);
  }

  /** Measures every watched element and sends the sizes that changed. */
  #flush() {
    // Tracks reported before and now shown nowhere go to 0x0.
    const sizes = new Map([...this.#sent.keys()].map((sid) => [sid, [0, 0]]));
    const tabShown = document.visibilityState === 'visible';
    for (const [el, sid] of this.#elements) {
      // Changed outside the document, where its events do not reach us.
      if (this.#sidOf(el.srcObject) !== sid) {
        this.#unwatch(el);
        continue;
      }
      const shown = tabShown && el.isConnected && this.#inView.get(el) !== false;
      const [width, height] = shown ? renderedSize(el) : [0, 0];
      const [w, h] = sizes.get(sid) ?? [0, 0];
      sizes.set(sid, [Math.max(w, width), Math.max(h, height)]);
    }
    for (const [sid, [width, height]] of sizes) {
      const key = `${width}x${height}`;
      if (this.#sent.get(sid) === key) continue;
      this.#sent.set(sid, key);
      this.#send({ type: 'track_settings', track_sid: sid, width, height });
    }
  }
}

/** An element's size in device pixels, or 0x0 if either side is empty (e.g. display:none). */
function renderedSize(el) {
  const scale = globalThis.devicePixelRatio || 1;
  const device = (css) => Math.min(MAX_RENDERED_DIMENSION, Math.round(css * scale));
  const [width, height] = [device(el.clientWidth), device(el.clientHeight)];
  return width > 0 && height > 0 ? [width, height] : [0, 0];
}
