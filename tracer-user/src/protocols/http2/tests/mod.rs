//! HTTP/2 parsing fed with captured and hand-built bytes: whole connections (`exchanges`), and
//! connections joined after their preface or upgraded from HTTP/1.1 (`joined`).

mod budget;
mod exchanges;
mod joined;
