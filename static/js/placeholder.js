/* What the pages show of a result before it has loaded (a BlurHash painted on a canvas), and
 * which image formats this browser can show, so that uploads with format=auto name them.
 * Adds Darkroom.placeholder(hash, width, height) and Darkroom.imageTypes (a promise).
 */
(function () {
  "use strict";

  const D = (window.Darkroom = window.Darkroom || {});

  // --- BlurHash (https://blurha.sh): a few cosine components, base 83 -----------------------
  const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
  // The canvas is small and the page stretches it: the hash holds no detail to lose.
  const CANVAS_EDGE = 32;

  function base83(text) {
    let value = 0;
    for (const character of text) value = value * 83 + DIGITS.indexOf(character);
    return value;
  }

  function toLinear(value) {
    const v = value / 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }

  function toSrgb(value) {
    const v = Math.max(0, Math.min(1, value));
    return Math.round(v <= 0.0031308 ? v * 12.92 * 255 : (1.055 * Math.pow(v, 1 / 2.4) - 0.055) * 255);
  }

  function signedSquare(value) {
    return Math.sign(value) * value * value;
  }

  // The hash's colours, in linear light: the average first, then each cosine's weight.
  function components(hash) {
    const size = base83(hash[0]);
    const across = (size % 9) + 1;
    const down = Math.floor(size / 9) + 1;
    if (hash.length !== 4 + 2 * across * down) throw new Error("not a BlurHash: " + hash);
    const maximum = (base83(hash[1]) + 1) / 166;
    const average = base83(hash.slice(2, 6));
    const colours = [[toLinear(average >> 16), toLinear((average >> 8) & 255), toLinear(average & 255)]];
    for (let i = 1; i < across * down; i++) {
      const value = base83(hash.slice(4 + i * 2, 6 + i * 2));
      const quantised = [Math.floor(value / 361), Math.floor(value / 19) % 19, value % 19];
      colours.push(quantised.map((q) => signedSquare((q - 9) / 9) * maximum));
    }
    return { across, down, colours };
  }

  function paint(hash, width, height) {
    const { across, down, colours } = components(hash);
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const sum = [0, 0, 0];
        for (let j = 0; j < down; j++) {
          for (let i = 0; i < across; i++) {
            const basis = Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
            const colour = colours[i + j * across];
            for (let c = 0; c < 3; c++) sum[c] += colour[c] * basis;
          }
        }
        const at = 4 * (x + y * width);
        pixels.set([toSrgb(sum[0]), toSrgb(sum[1]), toSrgb(sum[2]), 255], at);
      }
    }
    return new ImageData(pixels, width, height);
  }

  // A canvas with the hash painted on it, shaped like the result (width x height).
  D.placeholder = function (hash, width, height) {
    const scale = CANVAS_EDGE / Math.max(width, height, 1);
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    canvas.getContext("2d").putImageData(paint(hash, canvas.width, canvas.height), 0, 0);
    canvas.className = "placeholder";
    canvas.setAttribute("aria-hidden", "true");
    return canvas;
  };

  // --- The formats this browser shows, best first, for the upload's Accept header -----------
  const PROBES = {
    "image/avif":
      "AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADrbWV0YQAAAAAAAAAhaGRscgAAAAAAAAAAcGljdAAAAAAAAAAAAAAAAAAAAAAOcGl0bQAAAAAAAQAAAB5pbG9jAAAAAEQAAAEAAQAAAAEAAAETAAAAIQAAAChpaW5mAAAAAAABAAAAGmluZmUCAAAAAAEAAGF2MDFDb2xvcgAAAABqaXBycAAAAEtpcGNvAAAAFGlzcGUAAAAAAAAAAQAAAAEAAAAQcGl4aQAAAAADCAgIAAAADGF2MUOBAAwAAAAAE2NvbHJuY2x4AAEADQAGgAAAABdpcG1hAAAAAAAAAAEAAQQBAoMEAAAAKW1kYXQSAAoIGAAGiAhoNCAyExlHh4Yhh5555oAAAJBAyRxgimo=",
    "image/webp": "UklGRiQAAABXRUJQVlA4IBgAAAAwAQCdASoBAAEAAsBMJaQAA3AA/veMAAA=",
    "image/jxl": "/woAEBAJCAABACgASxiLFcJJQU5/AA==",
  };

  function shows(type) {
    return new Promise((resolve) => {
      const image = new Image();
      image.onload = () => resolve(image.width === 1);
      image.onerror = () => resolve(false);
      image.src = "data:" + type + ";base64," + PROBES[type];
    });
  }

  D.imageTypes = Promise.all(Object.keys(PROBES).map(async (type) => ((await shows(type)) ? type : null))).then(
    (types) => types.filter(Boolean)
  );
})();
