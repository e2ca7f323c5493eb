//! Atoms used by more than one NIF domain. All are fixed at compile time: no atom is
//! ever made from network or user data.

rustler::atoms! {
    ok,
    error,
    aws_cluster,
    inet,
    inet6,
    nil,
}
