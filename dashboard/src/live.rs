//! Live updates and the view state every page shares.
//!
//! The collector's `/live` endpoint is a server-sent event stream that sends a `tick` event
//! once a second. In the browser, each tick bumps [`Live::tick`]; pages key their queries on
//! it, so every chart and table refreshes without a reload. The stream is closed while the
//! tab is hidden or the operator pauses, and opened again when the tab shows.

use leptos::prelude::*;

/// Shared live state (a context provided by the app).
#[derive(Clone, Copy)]
pub struct Live {
    /// Bumped on every server tick while the stream is open.
    pub tick: RwSignal<u64>,
    /// The stream is open.
    pub connected: RwSignal<bool>,
    /// Paused by the operator.
    pub paused: RwSignal<bool>,
    /// Pixel width charts are drawn at; range queries ask for one point per pixel.
    pub width: RwSignal<u32>,
}

/// Chart width assumed before the browser has measured the window.
pub const DEFAULT_WIDTH: u32 = 720;

impl Live {
    /// Creates the state and provides it as context.
    pub fn provide() -> Live {
        let live = Live {
            tick: RwSignal::new(0),
            connected: RwSignal::new(false),
            paused: RwSignal::new(false),
            width: RwSignal::new(DEFAULT_WIDTH),
        };
        provide_context(live);
        live
    }

    /// The app's live state.
    pub fn get() -> Live {
        expect_context::<Live>()
    }

    /// Opens the event stream and follows the tab's visibility (browser only).
    pub fn start(self) {
        #[cfg(feature = "hydrate")]
        browser::start(self);
    }
}

/// Now, in Unix seconds, wherever the code runs.
pub fn now_secs() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() / 1e3
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;

    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    use super::Live;

    struct Stream {
        source: web_sys::EventSource,
        _handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
    }

    thread_local! {
        static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
    }

    fn close(live: Live) {
        STREAM.with(|s| {
            if let Some(s) = s.borrow_mut().take() {
                s.source.close();
            }
        });
        live.connected.set(false);
    }

    fn open(live: Live) {
        if STREAM.with(|s| s.borrow().is_some()) {
            return;
        }
        let Ok(source) = web_sys::EventSource::new("/live") else {
            return;
        };
        let mut handlers = Vec::new();
        let mut on = |event: &str, f: Box<dyn FnMut(web_sys::Event)>| {
            let c = Closure::wrap(f);
            let _ = source.add_event_listener_with_callback(event, c.as_ref().unchecked_ref());
            handlers.push(c);
        };
        on(
            "tick",
            Box::new(move |_| live.tick.update(|t| *t = t.wrapping_add(1))),
        );
        on("open", Box::new(move |_| live.connected.set(true)));
        on("error", Box::new(move |_| live.connected.set(false)));
        STREAM.with(|s| {
            *s.borrow_mut() = Some(Stream {
                source,
                _handlers: handlers,
            })
        });
    }

    fn visible() -> bool {
        document().visibility_state() != web_sys::VisibilityState::Hidden
    }

    fn measure(live: Live) {
        if let Some(w) = window().inner_width().ok().and_then(|v| v.as_f64()) {
            let px = (w - 48.0).clamp(240.0, 1600.0) as u32;
            // Whole 40 px steps, so a small resize does not refetch every chart.
            live.width.set(px / 40 * 40);
        }
    }

    pub(super) fn start(live: Live) {
        measure(live);
        let on_resize = Closure::<dyn FnMut()>::new(move || measure(live));
        let _ =
            window().add_event_listener_with_callback("resize", on_resize.as_ref().unchecked_ref());
        on_resize.forget();
        let on_visibility = Closure::<dyn FnMut()>::new(move || {
            if visible() && !live.paused.get_untracked() {
                open(live);
                // Catch up at once after the tab was hidden.
                live.tick.update(|t| *t = t.wrapping_add(1));
            } else {
                close(live);
            }
        });
        let _ = document().add_event_listener_with_callback(
            "visibilitychange",
            on_visibility.as_ref().unchecked_ref(),
        );
        on_visibility.forget();
        Effect::new(move |_| {
            if live.paused.get() || !visible() {
                close(live);
            } else {
                open(live);
            }
        });
    }
}
