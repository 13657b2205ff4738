"""What HQ reads about its members and sales: read-only, on the reader connection, every
function taking the caller's ``Scope`` (HQ.md: reports/)."""
