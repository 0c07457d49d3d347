//! `flatnet-cni`: invoked by a container runtime with CNI_* variables and the configuration
//! on stdin; prints the result or the error as JSON on stdout.

use std::io::{Read, Write};

fn main() {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let (out, ok) = flatnet_cni::run(&env, &stdin);
    let mut o = std::io::stdout();
    let _ = o.write_all(out.as_bytes());
    let _ = o.flush();
    std::process::exit(if ok { 0 } else { 1 });
}
