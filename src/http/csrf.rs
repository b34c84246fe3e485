//! Cross-site request forgery checks of the API (pure): a browser on another site can make a
//! signed-in user's browser send a form POST (no custom headers, form content types) with
//! Airflow's session cookie attached; such requests must not change anything.

use axum::http::{header, HeaderMap, Method, StatusCode};

/// Why a state-changing API request is refused, with its status; `None` when it may go on.
/// POST, PUT, PATCH and DELETE must send `Content-Type: application/json` (a cross-site form
/// cannot), and when a browser names the request's origin (`Sec-Fetch-Site`, `Origin`) it must
/// be this site.
pub fn refusal(method: &Method, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let json = text(header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "State-changing API calls must send Content-Type: application/json",
        ));
    }
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Some((StatusCode::FORBIDDEN, "Cross-site API calls are refused"));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let same = match (authority, text(header::HOST)) {
            (Some(a), Some(host)) => a.eq_ignore_ascii_case(host),
            _ => false,
        };
        if !same {
            return Some((StatusCode::FORBIDDEN, "Cross-origin API calls are refused"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_static(k),
                header::HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn reads_pass_writes_need_json_and_this_site() {
        assert_eq!(refusal(&Method::GET, &headers(&[])), None);
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(refusal(&Method::POST, &headers(&[json])), None);
        assert_eq!(
            refusal(&Method::POST, &headers(&[])).map(|r| r.0),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            refusal(
                &Method::POST,
                &headers(&[("content-type", "application/x-www-form-urlencoded")])
            )
            .map(|r| r.0),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            refusal(&Method::DELETE, &headers(&[("content-type", "text/plain")])).map(|r| r.0),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let same = [
            json,
            ("host", "af.example:8443"),
            ("origin", "https://af.example:8443"),
        ];
        assert_eq!(refusal(&Method::POST, &headers(&same)), None);
        let other = [
            json,
            ("host", "af.example"),
            ("origin", "https://evil.example"),
        ];
        assert_eq!(
            refusal(&Method::POST, &headers(&other)).map(|r| r.0),
            Some(StatusCode::FORBIDDEN)
        );
        assert!(refusal(&Method::POST, &headers(&[json, ("origin", "null")])).is_some());
        assert!(refusal(
            &Method::POST,
            &headers(&[json, ("sec-fetch-site", "cross-site")])
        )
        .is_some());
        assert!(refusal(
            &Method::POST,
            &headers(&[json, ("sec-fetch-site", "same-site")])
        )
        .is_some());
        assert_eq!(
            refusal(
                &Method::POST,
                &headers(&[json, ("sec-fetch-site", "same-origin")])
            ),
            None
        );
    }
}
