//! criterion micro-benchmarks of the Switchboard codecs: run them with
//! `cargo bench -p bench-codecs`. The benchmarks live in `benches/codecs.rs`;
//! this library is empty.
