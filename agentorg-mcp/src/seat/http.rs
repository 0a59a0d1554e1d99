//! A seat over streamable HTTP, behind a bearer token.

use std::fmt;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::{Seat, SeatError};

/// The bearer token of one seat: an HTTP request must carry
/// `Authorization: Bearer <token>`, or it is refused with `401 Unauthorized`
/// before it reaches the MCP server.
///
/// The scheme name (`Bearer`) matches in any case. The token is compared
/// in constant time, and only there: `SeatToken` has no `PartialEq`, and
/// its `Debug` output does not show it.
#[derive(Clone)]
pub struct SeatToken(Arc<str>);

impl fmt::Debug for SeatToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeatToken(<redacted>)")
    }
}

impl SeatToken {
    /// A token: at least 16 visible ASCII characters (no spaces).
    ///
    /// ```
    /// use agentorg_mcp::seat::SeatToken;
    /// assert!(SeatToken::new("s3cret-token-for-the-cto").is_ok());
    /// assert!(SeatToken::new("short").is_err());
    /// ```
    pub fn new(token: impl Into<String>) -> Result<Self, SeatError> {
        let token = token.into();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SeatError::InvalidInput {
                message: "a seat token needs at least 16 visible ASCII characters and no spaces"
                    .to_owned(),
            });
        }
        Ok(Self(token.into()))
    }

    /// Whether an `Authorization` header value carries this token (compared
    /// in time independent of where they differ).
    fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|h| {
            let (scheme, rest) = h.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        }) else {
            return false;
        };
        let want = self.0.as_bytes();
        given.len() == want.len()
            && given
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A seat served over MCP streamable HTTP at one path (default `/mcp`),
/// with one bearer token: requests without it, or with another, get `401`.
///
/// The rmcp server configuration applies as given (by default it accepts
/// only loopback `Host` headers; list your host names with
/// [`StreamableHttpServerConfig::with_allowed_hosts`] to serve elsewhere).
/// Several seats can share one HTTP server: nest each one's
/// [`router`](Self::router) under its own prefix, each with its own token.
#[derive(Debug)]
pub struct SeatHttp {
    seat: Seat,
    token: SeatToken,
    path: String,
    config: StreamableHttpServerConfig,
}

impl SeatHttp {
    /// `seat` at `/mcp`, behind `token`.
    pub fn new(seat: Seat, token: SeatToken) -> Self {
        Self {
            seat,
            token,
            path: "/mcp".to_owned(),
            config: StreamableHttpServerConfig::default(),
        }
    }

    /// Serves at `path` instead of `/mcp`: a `/` and one or more segments
    /// of letters, digits, `-`, `_`, `.` and `~`, separated by single `/`
    /// (no trailing `/`, no `{…}` captures or wildcards).
    ///
    /// ```
    /// # use agentorg_core::chart::OrgChart;
    /// # use agentorg_mcp::seat::{Seat, SeatToken};
    /// # let chart = OrgChart::from_toml_str("org = \"o\"\nprincipal = \"p\"\nroles.cto.reports_to = \"p\"").unwrap();
    /// # let seat = Seat::builder(chart, "cto").build().unwrap();
    /// let token = || SeatToken::new("s3cret-token-for-the-cto").unwrap();
    /// assert!(seat.http(token()).with_path("/seats/cto").is_ok());
    /// for bad in ["", "/", "seats", "/seats/", "/{id}", "/a//b", "/.."] {
    ///     assert!(seat.http(token()).with_path(bad).is_err(), "{bad}");
    /// }
    /// ```
    pub fn with_path(mut self, path: impl Into<String>) -> Result<Self, SeatError> {
        let path = path.into();
        let segment_ok = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        };
        match path.strip_prefix('/') {
            Some(rest) if rest.split('/').all(segment_ok) => {
                self.path = path;
                Ok(self)
            }
            _ => Err(SeatError::InvalidInput {
                message: format!(
                    "`{path}` is not a seat path: use `/` and segments of letters, digits, `-`, `_`, `.`, `~` (like `/mcp` or `/seats/cto`)"
                ),
            }),
        }
    }

    /// Sets rmcp's streamable HTTP server configuration.
    pub fn with_config(mut self, config: StreamableHttpServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The axum router: the MCP service at the path, behind the token.
    pub fn router(&self) -> axum::Router {
        let seat = self.seat.clone();
        let service: StreamableHttpService<_, LocalSessionManager> = StreamableHttpService::new(
            move || Ok(seat.server()),
            Arc::new(LocalSessionManager::default()),
            self.config.clone(),
        );
        let token = self.token.clone();
        axum::Router::new()
            .nest_service(&self.path, service)
            .layer(axum::middleware::from_fn(
                move |req: Request, next: Next| {
                    let token = token.clone();
                    async move {
                        let given = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .map(|v| v.as_bytes());
                        if token.admits(given) {
                            next.run(req).await
                        } else {
                            unauthorized()
                        }
                    }
                },
            ))
    }

    /// Serves on `listener` until `shutdown` is cancelled (which also ends
    /// the MCP sessions).
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), SeatError> {
        self.config.cancellation_token = shutdown.child_token();
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await
            .map_err(|e| SeatError::Unavailable {
                message: format!("serving the seat over HTTP failed: {e}"),
            })
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"agentorg seat\"")],
        "a bearer token for this seat is required",
    )
        .into_response()
}
