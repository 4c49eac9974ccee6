//! The login page.
use maud::{html, Markup};

/// The login form; `error` is shown above it; `token` is the login form's own CSRF
/// token (double-submitted: also in a cookie).
pub(crate) fn body(error: Option<&str>, token: &str) -> Markup {
    html! {
        section.login aria-labelledby="login-h" {
            h1 id="login-h" { "Log in to the Airlock console" }
            @if let Some(e) = error { p.notice.error role="alert" { (e) } }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                p { label for="name" { "Account" } br; input id="name" name="name" type="text" autocomplete="username" required autofocus maxlength="64"; }
                p { label for="secret" { "Password (or the admin token, with the account " code { "token" } ")" } br;
                    input id="secret" name="secret" type="password" autocomplete="current-password" required maxlength="1024"; }
                p { button type="submit" { "Log in" } }
            }
        }
    }
}
