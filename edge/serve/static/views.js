// sixview's page: the six views (as edge/tiling.py cuts them) and what won each label, drawn on a canvas.
"use strict";

// Label colours: none of them a pure primary, so that a colour never reads as a class name.
const COLOURS = ["#f2a541", "#2fb7c4", "#b565d9", "#e8d23a", "#ff6f91", "#7bd389", "#8c9eff", "#c98b5a"];
const VIEW_NAMES = ["whole", "top_left", "top_right", "bottom_left", "bottom_right", "centre"];

function fmt(x) { return typeof x === "number" ? x.toFixed(2) : "?"; }

function pyRound(x) { // Python's round(): halves go to the even neighbour
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function viewBoxes(width, height, fraction, tiling) {
  const boxes = { whole: [0, 0, width, height] };
  if (!tiling) return boxes;
  const vw = Math.max(1, Math.min(width, pyRound(width * fraction)));
  const vh = Math.max(1, Math.min(height, pyRound(height * fraction)));
  const cx = Math.floor((width - vw) / 2), cy = Math.floor((height - vh) / 2);
  const origins = [[0, 0], [width - vw, 0], [0, height - vh], [width - vw, height - vh], [cx, cy]];
  VIEW_NAMES.slice(1).forEach((name, i) => {
    const [x, y] = origins[i];
    boxes[name] = [x, y, x + vw, y + vh];
  });
  return boxes;
}

// What to highlight: the confident labels, else the guess; each with its colour and winning view.
function shown(rec) {
  const labels = Array.isArray(rec.labels) ? rec.labels : [];
  const items = labels.map((name) => ({ name, score: (rec.scores || {})[name], guess: false }));
  if (!items.length && rec.guess && rec.guess.label) {
    items.push({ name: rec.guess.label, score: rec.guess.score, guess: true });
  }
  items.forEach((it, i) => {
    it.colour = COLOURS[i % COLOURS.length];
    it.view = (rec.views || {})[it.name] || null;
  });
  return items;
}

// Draw the views of `rec` on ctx, whose pixels are `scale` times the record's image; `fraction`:
// the side of a corner/centre view (the model's view_fraction).
function drawViews(ctx, rec, scale, fraction) {
  if (!rec || rec.error || !rec.width) return;
  const boxes = viewBoxes(rec.width, rec.height, fraction || 0.6, rec.tiling !== false);
  const items = shown(rec);
  const winners = new Map();
  for (const it of items) {
    if (it.view) winners.set(it.view, (winners.get(it.view) || []).concat([it]));
  }
  const lw = Math.max(2, Math.round(ctx.canvas.width / 300));
  ctx.save();
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const [name, [x0, y0, x1, y1]] of Object.entries(boxes)) { // every view, faint
    if (winners.has(name)) continue;
    ctx.setLineDash([6, 5]);
    ctx.lineWidth = Math.max(1, lw / 2);
    ctx.strokeStyle = "rgba(255,255,255,0.75)";
    ctx.strokeRect(x0 * scale + 0.5, y0 * scale + 0.5, (x1 - x0) * scale - 1, (y1 - y0) * scale - 1);
  }
  ctx.setLineDash([]);
  for (const [name, its] of winners) { // the views that won a label: solid, with the labels
    const [x0, y0, x1, y1] = boxes[name] || boxes.whole;
    ctx.lineWidth = lw * 1.5;
    ctx.strokeStyle = its[0].colour;
    ctx.strokeRect(x0 * scale + lw, y0 * scale + lw, (x1 - x0) * scale - 2 * lw, (y1 - y0) * scale - 2 * lw);
    let ty = y0 * scale + 2 * lw;
    for (const it of its) {
      const text = `${it.guess ? "maybe " : ""}${it.name} ${fmt(it.score)}`;
      const w = ctx.measureText(text).width + 10;
      const h = parseInt(ctx.font, 10) + 8;
      ctx.fillStyle = it.colour;
      ctx.fillRect(x0 * scale + 2 * lw, ty, w, h);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, x0 * scale + 2 * lw + 5, ty + 4);
      ty += h + 2;
    }
  }
  ctx.restore();
}

function fmt(x) { return typeof x === "number" ? x.toFixed(2) : "?"; }
