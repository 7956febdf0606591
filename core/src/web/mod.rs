//! The built-in web phone served at `/`: one self-contained HTML file (inline CSS and
//! JavaScript, its own MD5 for the HA1, no external assets) that speaks sylkRTC-2 to the
//! gateway exactly as sylkrtc.js does. It is the product's demo and the browser client of the
//! end-to-end tests, which drive it through `window.phone` (see the comment at the top of the
//! script for the test API).

/// The page.
pub const PHONE_HTML: &str = include_str!("phone.html");
