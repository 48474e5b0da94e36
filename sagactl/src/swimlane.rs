//! An order's trace drawn as a swimlane: one lane per service, each event at its time, arrows
//! from each event's cause (its `ce_causationid`) to it, compensations and dead letters marked,
//! the verdict on top. `html` is one self-contained page (inline SVG and CSS, no script, nothing
//! fetched) with the timeline as a table under the drawing; `svg` is the drawing alone.
//!
//! Pure: a [`Drawing`] in, text out. The layout is deterministic, so tests can check structure:
//! every lane is a `g.lane[data-service]`, every event a `g.event[data-type][data-position]`,
//! every arrow a `path.arrow[data-from][data-to]` between event element ids.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use shared::contracts::event_type as ev;
use shared::topics::service;

/// `--format` of `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrawFormat {
    Html,
    Svg,
}

/// What the drawing shows: the order, its verdict, and its events in timeline order.
#[derive(Debug, Clone)]
pub struct Drawing {
    pub order_id: String,
    /// `completed`, `cancelled`, `in_progress`, `stuck` or `not_found`.
    pub state: String,
    pub verdict: String,
    pub notes: Vec<String>,
    pub events: Vec<Mark>,
}

/// One event (or dead letter) of the trace.
#[derive(Debug, Clone)]
pub struct Mark {
    pub time: DateTime<Utc>,
    pub service: String,
    pub event_type: String,
    /// `topic/partition/offset`: unique per message.
    pub position: String,
    pub message_id: Option<String>,
    pub causation_id: Option<String>,
    pub details: String,
    /// The dead letter's id, when this is one.
    pub dead_letter: Option<String>,
    /// The dead letter this message was redriven from.
    pub redriven_from: Option<String>,
}

impl Mark {
    fn is_compensation(&self) -> bool {
        self.dead_letter.is_none()
            && [ev::INVENTORY_RELEASED, ev::PAYMENT_REFUNDED, ev::SHIPMENT_CANCELLED]
                .contains(&self.event_type.as_str())
    }
}

/// Why an arrow is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The target's `ce_causationid` is the source's `ce_id`.
    Causation,
    /// The source message was dead-lettered: the target is its dead letter.
    DeadLettered,
    /// The target was republished from the source dead letter.
    Redriven,
}

impl Link {
    fn class(self) -> &'static str {
        match self {
            Link::Causation => "causation",
            Link::DeadLettered => "dead-lettered",
            Link::Redriven => "redriven",
        }
    }
}

/// An arrow from one event (index into [`Drawing::events`]) to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrow {
    pub from: usize,
    pub to: usize,
    pub link: Link,
}

/// The arrows between the drawing's events. A cause is looked up among the messages that are
/// not dead letters (a dead letter carries its original's id); a cause outside the trace (before
/// `--since`, or no longer retained) draws no arrow.
pub fn arrows(events: &[Mark]) -> Vec<Arrow> {
    let original =
        |id: &str| events.iter().position(|e| e.dead_letter.is_none() && e.message_id.as_deref() == Some(id));
    let mut arrows = Vec::new();
    for (to, event) in events.iter().enumerate() {
        match (&event.dead_letter, &event.redriven_from) {
            (Some(_), _) => {
                if let Some(from) = event.message_id.as_deref().and_then(original) {
                    arrows.push(Arrow { from, to, link: Link::DeadLettered });
                }
            }
            (None, Some(dead)) => {
                if let Some(from) = events.iter().position(|e| e.dead_letter.as_deref() == Some(dead.as_str())) {
                    arrows.push(Arrow { from, to, link: Link::Redriven });
                }
            }
            (None, None) => {
                if let Some(from) = event.causation_id.as_deref().and_then(original).filter(|from| *from != to) {
                    arrows.push(Arrow { from, to, link: Link::Causation });
                }
            }
        }
    }
    arrows
}

const LABEL_W: f64 = 136.0;
const BOX_W: f64 = 148.0;
const BOX_H: f64 = 46.0;
const GAP: f64 = 14.0;
const LANE_H: f64 = 92.0;
const TOP: f64 = 36.0;
const MIN_TIMELINE_W: f64 = 900.0;
/// Time between events as distance: 1 s is 500 px, up to [`MAX_WAIT_W`].
const PX_PER_MS: f64 = 0.5;
/// A longer wait is drawn this wide, with its duration written across it.
const MAX_WAIT_W: f64 = 320.0;

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub lanes: Vec<String>,
    /// Per event: its lane (index into `lanes`) and the left edge of its box.
    pub slots: Vec<(usize, f64)>,
    /// Waits drawn shorter than their time: from x, to x, and how long (ms).
    pub breaks: Vec<(f64, f64, i64)>,
    pub width: f64,
    pub height: f64,
}

/// The five services in saga order, then any other service seen. Events go left to right in
/// time order, each a box's width after the one before plus its wait at 1 s = 500 px; a wait
/// longer than [`MAX_WAIT_W`] is drawn that wide and labelled with its duration, so a burst of
/// events milliseconds apart stays readable and a long wait still shows.
pub fn layout(events: &[Mark]) -> Layout {
    let mut lanes: Vec<String> = service::ALL.iter().map(|s| (*s).to_owned()).collect();
    for event in events {
        if !lanes.contains(&event.service) {
            lanes.push(event.service.clone());
        }
    }
    let mut slots = Vec::with_capacity(events.len());
    let mut breaks = Vec::new();
    let mut x = LABEL_W + GAP;
    let mut previous: Option<DateTime<Utc>> = None;
    for event in events {
        if let Some(before) = previous {
            let wait_ms = (event.time - before).num_milliseconds().max(0);
            let wait = wait_ms as f64 * PX_PER_MS;
            if wait > MAX_WAIT_W {
                breaks.push((x + BOX_W, x + BOX_W + GAP + MAX_WAIT_W, wait_ms));
            }
            x += BOX_W + GAP + wait.min(MAX_WAIT_W);
        }
        previous = Some(event.time);
        let lane = lanes.iter().position(|l| *l == event.service).unwrap_or(0);
        slots.push((lane, x));
    }
    let width = (x + BOX_W).max(LABEL_W + GAP + MIN_TIMELINE_W) + GAP;
    let height = TOP + lanes.len() as f64 * LANE_H + 12.0;
    Layout { lanes, slots, breaks, width, height }
}

/// XML/HTML text and attribute escaping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `+12 ms`, `+1.250 s`, `+2m05s` after the first event.
fn offset_label(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("+{ms} ms"),
        ms if ms < 60_000 => format!("+{:.3} s", ms as f64 / 1000.0),
        ms => format!("+{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

const SVG_STYLE: &str = "
.lane-bg { fill: #f6f8fa; } .lane-bg.odd { fill: #eef1f5; }
.lane-label { font: 600 14px system-ui, sans-serif; fill: #24292f; }
.event rect { fill: #ffffff; stroke: #57606a; stroke-width: 1.2; rx: 6; }
.event .type { font: 600 12px system-ui, sans-serif; fill: #24292f; }
.event .meta { font: 11px ui-monospace, monospace; fill: #57606a; }
.event .badge { font: 700 11px system-ui, sans-serif; }
.event.compensation rect { fill: #fff4e5; stroke: #bc4c00; stroke-dasharray: 5 3; }
.event.compensation .badge { fill: #bc4c00; }
.event.dead-letter rect { fill: #ffebe9; stroke: #cf222e; stroke-width: 2; }
.event.dead-letter .badge { fill: #cf222e; }
.event.terminal rect { stroke-width: 2.2; }
.arrow { fill: none; stroke-width: 1.6; }
.arrow.causation { stroke: #0969da; }
.arrow.dead-lettered { stroke: #cf222e; stroke-dasharray: 6 4; }
.arrow.redriven { stroke: #8250df; stroke-dasharray: 2 3; }
.axis { font: 11px ui-monospace, monospace; fill: #57606a; }
.wait-band { fill: #d0d7de; fill-opacity: 0.35; }
.svg-verdict { font: 600 15px system-ui, sans-serif; fill: #24292f; }
";

/// The drawing as an SVG element. `standalone` adds the XML namespace declarations and the
/// verdict line a page would otherwise show above it.
pub fn svg(drawing: &Drawing, standalone: bool) -> String {
    let layout = layout(&drawing.events);
    let arrows = arrows(&drawing.events);
    let extra = if standalone { 30.0 } else { 0.0 };
    let (w, h) = (layout.width, layout.height + extra);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="swimlane" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="{}">"#,
        escape(&format!("saga of order {}: {}", drawing.order_id, drawing.verdict))
    );
    let _ = write!(out, "<title>{}</title><style>{SVG_STYLE}</style>", escape(&format!("order {}", drawing.order_id)));
    out.push_str(concat!(
        r##"<defs><marker id="head-causation" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#0969da"/></marker>"##,
        r##"<marker id="head-dead-lettered" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#cf222e"/></marker>"##,
        r##"<marker id="head-redriven" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8250df"/></marker></defs>"##
    ));
    if standalone {
        let _ = write!(
            out,
            r#"<text class="svg-verdict" x="12" y="22">{}</text><g transform="translate(0 {extra})">"#,
            escape(&format!("order {} — verdict: {}", drawing.order_id, drawing.verdict))
        );
    } else {
        out.push_str("<g>");
    }
    draw_lanes(&mut out, &layout);
    draw_breaks(&mut out, &layout);
    draw_arrows(&mut out, &layout, &arrows);
    draw_events(&mut out, drawing, &layout);
    out.push_str("</g></svg>");
    out
}

fn lane_y(lane: usize) -> f64 {
    TOP + lane as f64 * LANE_H
}

fn draw_lanes(out: &mut String, layout: &Layout) {
    for (i, lane) in layout.lanes.iter().enumerate() {
        let y = lane_y(i);
        let odd = if i % 2 == 1 { " odd" } else { "" };
        let _ = write!(
            out,
            r#"<g class="lane" data-service="{s}"><rect class="lane-bg{odd}" x="0" y="{y:.0}" width="{w:.0}" height="{LANE_H:.0}"/><text class="lane-label" x="12" y="{ty:.0}">{s}</text></g>"#,
            s = escape(lane),
            w = layout.width,
            ty = y + LANE_H / 2.0 + 5.0,
        );
    }
}

/// A long wait: its duration across the gap, over every lane; and what the distance means.
fn draw_breaks(out: &mut String, layout: &Layout) {
    let _ = write!(
        out,
        r#"<text class="axis" x="{:.0}" y="{:.0}">time → (boxes spaced by the time between them; each says how long after the first event)</text>"#,
        LABEL_W + GAP,
        TOP - 12.0
    );
    for (from, to, ms) in &layout.breaks {
        let mid = (from + to) / 2.0;
        let _ = write!(
            out,
            r#"<g class="wait"><rect class="wait-band" x="{:.1}" y="{TOP:.0}" width="{:.1}" height="{:.0}"/><text class="axis" x="{mid:.1}" y="{:.0}" text-anchor="middle">{} later</text></g>"#,
            from + GAP / 2.0,
            to - from - GAP,
            layout.lanes.len() as f64 * LANE_H,
            TOP + 14.0,
            escape(&crate::timespec::human(std::time::Duration::from_millis((*ms).max(0) as u64))),
        );
    }
}

/// The box's top-left corner.
fn box_at(layout: &Layout, event: usize) -> (f64, f64) {
    let (lane, x) = layout.slots[event];
    (x, lane_y(lane) + (LANE_H - BOX_H) / 2.0 + 8.0)
}

fn draw_arrows(out: &mut String, layout: &Layout, arrows: &[Arrow]) {
    for arrow in arrows {
        let (fx, fy) = box_at(layout, arrow.from);
        let (tx, ty) = box_at(layout, arrow.to);
        let (x1, y1) = (fx + BOX_W, fy + BOX_H / 2.0);
        let (x2, y2) = if tx >= x1 { (tx, ty + BOX_H / 2.0) } else { (tx + BOX_W / 2.0, ty) };
        let bend = ((x2 - x1).abs() / 2.0).max(30.0);
        let class = arrow.link.class();
        let _ = write!(
            out,
            r#"<path class="arrow {class}" data-from="ev-{}" data-to="ev-{}" d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" marker-end="url(#head-{class})"/>"#,
            arrow.from,
            arrow.to,
            x1 + bend,
            x2 - bend,
        );
    }
}

fn draw_events(out: &mut String, drawing: &Drawing, layout: &Layout) {
    let start = drawing.events.iter().map(|e| e.time).min();
    for (i, event) in drawing.events.iter().enumerate() {
        let (x, y) = box_at(layout, i);
        let (class, badge) = if event.dead_letter.is_some() {
            ("event dead-letter", "✖ dead letter")
        } else if event.is_compensation() {
            ("event compensation", "↺ compensation")
        } else if [ev::ORDER_COMPLETED, ev::ORDER_CANCELLED].contains(&event.event_type.as_str()) {
            ("event terminal", "")
        } else {
            ("event", "")
        };
        let offset = start.map_or(0, |s| (event.time - s).num_milliseconds());
        let mut tooltip = format!(
            "{} {} by {} at {} ({})",
            event.event_type,
            if event.dead_letter.is_some() { "dead-lettered" } else { "published" },
            event.service,
            event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event.position
        );
        if !event.details.is_empty() {
            tooltip.push_str(&format!("\n{}", event.details));
        }
        let _ = write!(
            out,
            r#"<g class="{class}" id="ev-{i}" data-type="{t}" data-service="{s}" data-position="{p}" data-id="{id}"><title>{tooltip}</title>"#,
            t = escape(&event.event_type),
            s = escape(&event.service),
            p = escape(&event.position),
            id = escape(event.message_id.as_deref().unwrap_or("")),
            tooltip = escape(&tooltip),
        );
        if !badge.is_empty() {
            let _ = write!(out, r#"<text class="badge" x="{:.1}" y="{:.1}">{badge}</text>"#, x + 4.0, y - 6.0);
        }
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{BOX_W:.0}" height="{BOX_H:.0}"/><text class="type" x="{tx:.1}" y="{:.1}">{t}</text><text class="meta" x="{tx:.1}" y="{:.1}">{m}</text></g>"#,
            y + 19.0,
            y + 36.0,
            tx = x + 8.0,
            t = escape(&crate::output::truncate(&event.event_type, 21)),
            m = escape(&offset_label(offset)),
        );
    }
}

const PAGE_STYLE: &str = "
body { font: 14px system-ui, sans-serif; color: #24292f; margin: 24px; background: #ffffff; }
header.verdict { border-left: 6px solid #57606a; padding: 8px 16px; margin-bottom: 16px; background: #f6f8fa; }
header.verdict.completed { border-color: #1a7f37; } header.verdict.cancelled { border-color: #bc4c00; }
header.verdict.stuck, header.verdict.not_found { border-color: #cf222e; } header.verdict.in_progress { border-color: #0969da; }
h1 { font-size: 18px; margin: 0 0 6px; } h1 code { font-size: 16px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #24292f; color: #fff; font-weight: 600; }
p.summary { font-size: 16px; margin: 6px 0; } ul.notes { margin: 4px 0; color: #57606a; }
.drawing { border: 1px solid #d0d7de; } .drawing svg { display: block; max-width: 100%; height: auto; }
ul.legend { list-style: none; padding: 0; display: flex; gap: 20px; flex-wrap: wrap; color: #57606a; }
.swatch { display: inline-block; width: 18px; height: 10px; margin-right: 6px; border: 1.5px solid #57606a; vertical-align: middle; }
.swatch.compensation { background: #fff4e5; border: 1.5px dashed #bc4c00; } .swatch.dead-letter { background: #ffebe9; border: 2px solid #cf222e; }
.swatch.causation { border: 0; border-top: 2px solid #0969da; height: 0; } .swatch.dead-lettered { border: 0; border-top: 2px dashed #cf222e; height: 0; }
.swatch.redriven { border: 0; border-top: 2px dotted #8250df; height: 0; }
table.timeline { border-collapse: collapse; margin-top: 16px; font-size: 13px; }
table.timeline th, table.timeline td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #d0d7de; }
table.timeline td.pos, table.timeline td.time { font-family: ui-monospace, monospace; }
tr.dead-letter td { color: #cf222e; } tr.compensation td { color: #bc4c00; }
";

/// The whole page.
pub fn html(drawing: &Drawing) -> String {
    let mut out = String::new();
    let title = escape(&format!("saga of order {}", drawing.order_id));
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><meta name="viewport" content="width=device-width, initial-scale=1"/><title>{title}</title><style>{PAGE_STYLE}</style></head><body>"#
    );
    let state = escape(&drawing.state);
    let _ = write!(
        out,
        r#"<header class="verdict {state}" data-state="{state}"><h1>Order <code>{}</code> <span class="state">{}</span></h1><p class="summary">verdict: {}</p>"#,
        escape(&drawing.order_id),
        escape(&drawing.state.replace('_', " ")),
        escape(&drawing.verdict)
    );
    if !drawing.notes.is_empty() {
        out.push_str(r#"<ul class="notes">"#);
        for note in &drawing.notes {
            let _ = write!(out, "<li>note: {}</li>", escape(note));
        }
        out.push_str("</ul>");
    }
    out.push_str("</header>");
    out.push_str(concat!(
        r#"<ul class="legend"><li><span class="swatch"></span>event</li><li><span class="swatch compensation"></span>compensation</li>"#,
        r#"<li><span class="swatch dead-letter"></span>dead letter</li><li><span class="swatch causation"></span>caused (ce_causationid)</li>"#,
        r#"<li><span class="swatch dead-lettered"></span>dead-lettered</li><li><span class="swatch redriven"></span>redriven</li></ul>"#
    ));
    let _ = write!(out, r#"<div class="drawing">{}</div>"#, svg(drawing, false));
    timeline_table(&mut out, drawing);
    out.push_str("</body></html>\n");
    out
}

fn timeline_table(out: &mut String, drawing: &Drawing) {
    out.push_str(r#"<table class="timeline"><thead><tr><th>time (UTC)</th><th>service</th><th>event</th><th>topic/partition/offset</th><th>details</th></tr></thead><tbody>"#);
    for event in &drawing.events {
        let class = if event.dead_letter.is_some() {
            "dead-letter"
        } else if event.is_compensation() {
            "compensation"
        } else {
            ""
        };
        let label = match &event.dead_letter {
            Some(id) => format!("dead-lettered {} ({id})", event.event_type),
            None => event.event_type.clone(),
        };
        let _ = write!(
            out,
            r#"<tr class="{class}"><td class="time">{}</td><td>{}</td><td>{}</td><td class="pos">{}</td><td>{}</td></tr>"#,
            escape(&crate::timespec::show(event.time)),
            escape(&event.service),
            escape(&label),
            escape(&event.position),
            escape(&event.details)
        );
    }
    out.push_str("</tbody></table>");
}

/// The drawing in `format`.
pub fn render(drawing: &Drawing, format: DrawFormat) -> String {
    match format {
        DrawFormat::Html => html(drawing),
        DrawFormat::Svg => {
            let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
            out.push('\n');
            out.push_str(&svg(drawing, true));
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("time")
    }

    fn mark(ms: i64, service: &str, event_type: &str, id: &str, cause: Option<&str>) -> Mark {
        Mark {
            time: at(ms),
            service: service.into(),
            event_type: event_type.into(),
            position: format!("{service}.topic/0/{ms}"),
            message_id: Some(id.into()),
            causation_id: cause.map(str::to_owned),
            details: String::new(),
            dead_letter: None,
            redriven_from: None,
        }
    }

    /// A shipment that failed: refunded, released, cancelled, and a notice that was
    /// dead-lettered once and then redriven.
    fn known() -> Drawing {
        let mut dead = mark(60, service::NOTIFICATION, ev::ORDER_CANCELLED, "cancelled", Some("released"));
        dead.dead_letter = Some("notification-svc/0/0".into());
        dead.details = "error=<script>alert(1)</script> & more".into();
        let mut redriven = mark(90, service::ORDER, ev::ORDER_CANCELLED, "cancelled", Some("released"));
        redriven.redriven_from = Some("notification-svc/0/0".into());
        Drawing {
            order_id: "0199a1b2-0000-7000-8000-000000000001".into(),
            state: "cancelled".into(),
            verdict: "cancelled (destination_not_served); compensations: InventoryReleased, PaymentRefunded".into(),
            notes: vec![],
            events: vec![
                mark(0, service::ORDER, ev::ORDER_PLACED, "placed", None),
                mark(10, service::INVENTORY, ev::INVENTORY_RESERVED, "reserved", Some("placed")),
                mark(20, service::PAYMENT, ev::PAYMENT_CAPTURED, "captured", Some("reserved")),
                mark(30, service::SHIPPING, ev::SHIPMENT_FAILED, "failed", Some("captured")),
                mark(40, service::PAYMENT, ev::PAYMENT_REFUNDED, "refunded", Some("failed")),
                mark(41, service::INVENTORY, ev::INVENTORY_RELEASED, "released", Some("failed")),
                mark(50, service::ORDER, ev::ORDER_CANCELLED, "cancelled", Some("released")),
                dead,
                redriven,
            ],
        }
    }

    #[test]
    fn arrows_follow_causation_dead_letters_and_redrives() {
        let drawing = known();
        let arrows = arrows(&drawing.events);
        let causation: Vec<(usize, usize)> =
            arrows.iter().filter(|a| a.link == Link::Causation).map(|a| (a.from, a.to)).collect();
        assert_eq!(causation, [(0, 1), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6)]);
        assert!(arrows.contains(&Arrow { from: 6, to: 7, link: Link::DeadLettered }), "{arrows:?}");
        assert!(arrows.contains(&Arrow { from: 7, to: 8, link: Link::Redriven }), "{arrows:?}");
        assert_eq!(arrows.len(), 8);
    }

    #[test]
    fn the_layout_keeps_time_order_one_lane_per_service_and_no_overlaps() {
        let drawing = known();
        let layout = layout(&drawing.events);
        assert_eq!(layout.lanes, service::ALL.map(str::to_owned));
        for pair in layout.slots.windows(2) {
            assert!(pair[1].1 - pair[0].1 >= BOX_W + GAP - 0.01, "{pair:?}");
        }
        assert_eq!(layout.slots[3].0, 3, "ShipmentFailed in shipping-svc's lane");
        assert!(layout.width >= layout.slots.last().map_or(0.0, |s| s.1) + BOX_W);
        assert!(layout.breaks.is_empty(), "{:?}", layout.breaks);
        // A long wait shows as a wide gap, with its duration written across it.
        let mut slow = known();
        slow.events[6].time = at(30_041);
        let wide = super::layout(&slow.events[..7]);
        assert!(wide.slots[6].1 - wide.slots[5].1 > 2.0 * (BOX_W + GAP), "{:?}", wide.slots);
        assert_eq!(wide.breaks.len(), 1);
        assert_eq!(wide.breaks[0].2, 30_000);
        assert!(svg(&slow, false).contains(">30.0s later</text>"));
    }

    #[test]
    fn the_page_holds_lanes_events_arrows_marks_and_the_verdict_and_escapes_text() {
        let drawing = known();
        let page = html(&drawing);
        for lane in service::ALL {
            assert!(page.contains(&format!(r#"<g class="lane" data-service="{lane}">"#)), "{lane}");
        }
        for (i, event) in drawing.events.iter().enumerate() {
            assert!(page.contains(&format!(r#"id="ev-{i}" data-type="{}""#, event.event_type)), "{i}");
            assert!(page.contains(&format!(r#"data-position="{}""#, event.position)));
        }
        assert_eq!(page.matches(r#"class="arrow causation""#).count(), 6);
        assert_eq!(page.matches(r#"<g class="event compensation""#).count(), 2);
        assert_eq!(page.matches(r#"<g class="event dead-letter""#).count(), 1);
        assert!(page.contains(r#"<header class="verdict cancelled""#));
        assert!(page.contains("verdict: cancelled (destination_not_served)"));
        assert!(!page.contains("<script"), "no script, and text is escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
        for fetch in ["src=", "href=", "<link", "@import", "url(http", "<script"] {
            assert!(!page.contains(fetch), "self-contained: {fetch}");
        }
    }

    #[test]
    fn the_svg_alone_carries_its_own_verdict_and_style() {
        let svg = render(&known(), DrawFormat::Svg);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.contains("verdict: cancelled"));
        assert!(svg.contains("<style>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
    }

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("bell\u{7}"), "bell\u{FFFD}");
    }
}
