// A loopback TCP port where nothing listens, for tests of a dead pod or an unreachable
// target: a socket bound to 127.0.0.1:0 that never calls listen(), so a connection attempt
// is refused at once (RST), and no other process can take the port while the object lives
// (unlike probing for a port that "was free a moment ago", which races with everyone).
//
// Thread safety: immutable after construction.
#pragma once

namespace aibrix::testing {

class RefusedPort {
 public:
  // Binds the socket; aborts with a message if it cannot (a broken test machine).
  RefusedPort();
  ~RefusedPort();  // closes the socket: the port is free again
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace aibrix::testing
