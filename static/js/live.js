/* Darkroom's client: the JSON API, and a live feed of the caller's jobs.
 *
 * The feed listens on the WebSocket (WS /ws/jobs/) while it is open. While it isn't, it
 * long-polls unfinished jobs (GET /api/v1/jobs/{id}?wait=N answers the moment the job ends), a
 * few at a time so that uploads and downloads keep the browser's other connections, and polls
 * the rest at the configured interval; and it reconnects with exponential backoff and jitter,
 * so that clients dropped together (a deploy restarting every gateway) don't come back together.
 * Plain browser JavaScript: no build step.
 */
(function () {
  "use strict";

  const FINISHED = ["completed", "failed", "cancelled"];
  // Statuses only move forward; a late event or poll answer must not move a job back.
  const RANK = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };
  // A browser opens six connections to a server: long polls hold two at most.
  const LONG_POLLS_AT_ONCE = 2;
  const LONG_POLL_SECONDS = 25; // answered sooner when the job ends; under proxies' idle timeouts

  function isFinished(job) {
    return FINISHED.includes(job.status);
  }

  function isNewer(known, next) {
    if (!known) return true;
    if (RANK[next.status] !== RANK[known.status]) return RANK[next.status] > RANK[known.status];
    return next.status !== known.status || (next.progress || 0) >= (known.progress || 0);
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || "The request failed.");
      this.status = status;
      this.code = error.code;
      this.fields = error.fields || [];
    }
  }

  function parseAnswer(status, text) {
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      data = null; // not JSON: a proxy's error page, say
    }
    if (status >= 200 && status < 300) return data;
    const fallback = { code: "http_" + status, message: "The server answered " + status + "." };
    throw new ApiError(status, (data && data.error) || fallback);
  }

  async function request(method, path) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    const response = await fetch(path, { method, headers, credentials: "same-origin" });
    return parseAnswer(response.status, await response.text());
  }

  // The image formats this browser shows (placeholder.js finds them): with format=auto the
  // result is the best of them.
  async function uploadAccept() {
    const types = window.Darkroom.imageTypes ? await window.Darkroom.imageTypes : [];
    return ["application/json", ...types].join(", ");
  }

  // Uploads use XMLHttpRequest because fetch can't report upload progress, and a photo
  // on a phone's connection takes long enough to need a progress bar.
  async function upload(path, formData, onProgress) {
    const accept = await uploadAccept();
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", accept);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
      };
      xhr.onload = () => {
        try {
          resolve(parseAnswer(xhr.status, xhr.responseText));
        } catch (error) {
          reject(error);
        }
      };
      xhr.onerror = () =>
        reject(new ApiError(0, { code: "network_error", message: "The upload failed: check the connection and try again." }));
      xhr.send(formData);
    });
  }

  /** Delays of 1 s, 2 s, 4 s... up to `max`, each with jitter so that clients don't reconnect in step. */
  class Backoff {
    constructor(base, max) {
      this.base = base || 1000;
      this.max = max || 30000;
      this.attempt = 0;
    }
    next() {
      const delay = Math.min(this.max, this.base * 2 ** this.attempt);
      this.attempt += 1;
      return delay / 2 + (Math.random() * delay) / 2;
    }
    reset() {
      this.attempt = 0;
    }
  }

  /**
   * The caller's jobs, kept current. `onJob(job, previous)` runs for every newer state;
   * `onTransport("websocket" | "polling")` whenever the way updates arrive changes.
   */
  class JobFeed {
    constructor(options) {
      this.pollingInterval = options.pollingInterval;
      this.onJob = options.onJob;
      this.onTransport = options.onTransport || function () {};
      this.path = options.path || "/ws/jobs/";
      this.jobs = new Map();
      this.backoff = new Backoff(1000, 30000);
      this.socket = null;
      this.pollTimer = null;
      this.longPolls = new Set(); // ids of the jobs long-polled now
      this.transport = null;
    }

    start() {
      this.connect();
    }

    update(job) {
      const known = this.jobs.get(job.job_id);
      if (!isNewer(known, job)) return;
      this.jobs.set(job.job_id, job);
      this.onJob(job, known);
      if (this.pollTimer !== null) this.longPollMore();
    }

    unfinished() {
      return Array.from(this.jobs.values()).filter((job) => !isFinished(job));
    }

    connect() {
      if (!("WebSocket" in window)) {
        this.usePolling();
        return;
      }
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      let socket;
      try {
        socket = new WebSocket(scheme + location.host + this.path);
      } catch (error) {
        this.reconnectLater();
        return;
      }
      this.socket = socket;
      socket.onopen = () => {
        this.backoff.reset();
        this.stopPolling();
        this.setTransport("websocket");
      };
      socket.onmessage = (event) => this.receive(event.data);
      // An error is always followed by a close: reconnect there, once.
      socket.onclose = () => {
        this.socket = null;
        this.reconnectLater();
      };
    }

    reconnectLater() {
      this.usePolling();
      setTimeout(() => this.connect(), this.backoff.next());
    }

    receive(text) {
      let message;
      try {
        message = JSON.parse(text);
      } catch (error) {
        return;
      }
      if (message.type === "jobs.state") {
        message.jobs.forEach((job) => this.update(job));
        // Jobs we follow that are too old to be in the state: look them up once.
        const listed = new Set(message.jobs.map((job) => job.job_id));
        this.poll(this.unfinished().filter((job) => !listed.has(job.job_id)));
      } else if (message.job) {
        this.update(message.job);
      }
    }

    usePolling() {
      this.setTransport("polling");
      if (this.pollTimer !== null) return;
      this.pollTimer = setInterval(() => this.poll(), this.pollingInterval);
      this.longPollMore();
      this.poll();
    }

    stopPolling() {
      clearInterval(this.pollTimer);
      this.pollTimer = null; // the long polls in flight end with their answers
    }

    longPollMore() {
      for (const job of this.unfinished()) {
        if (this.longPolls.size >= LONG_POLLS_AT_ONCE) return;
        if (!this.longPolls.has(job.job_id)) this.longPoll(job);
      }
    }

    /** Wait on the server for the job's end; again while the socket is down and the job unfinished. */
    async longPoll(job) {
      this.longPolls.add(job.job_id);
      let failed = false;
      try {
        this.update(await request("GET", job.job_url + "?wait=" + LONG_POLL_SECONDS));
      } catch (error) {
        failed = true; // the server is down or refused: wait an interval before asking again
      }
      if (failed) await new Promise((resolve) => setTimeout(resolve, this.pollingInterval));
      this.longPolls.delete(job.job_id);
      if (this.pollTimer !== null) this.longPollMore();
    }

    setTransport(transport) {
      if (transport === this.transport) return;
      this.transport = transport;
      this.onTransport(transport);
    }

    poll(jobs) {
      const unpolled = (jobs || this.unfinished()).filter((job) => !this.longPolls.has(job.job_id));
      return Promise.all(
        unpolled.map((job) =>
          request("GET", job.job_url)
            .then((fresh) => this.update(fresh))
            .catch(() => null) // the next poll tries again
        )
      );
    }
  }

  window.Darkroom = Object.assign(window.Darkroom || {}, {
    ApiError,
    Backoff,
    JobFeed,
    isFinished,
    api: {
      get: (path) => request("GET", path),
      post: (path) => request("POST", path),
      upload,
    },
  });
})();
