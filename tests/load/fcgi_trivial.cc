// fcgi_trivial: the smallest prefork FastCGI responder, to measure the
// front tier's ceiling (nginx -> FastCGI) on this machine.
//
//   fcgi_trivial PORT [WORKERS]     answers every request with 200 {"ok":true}

#include <fcgiapp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fcgi_trivial PORT [WORKERS]\n");
    return 2;
  }
  int port = std::atoi(argv[1]);
  int workers = argc > 2 ? std::atoi(argv[2]) : 4;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1024) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  pid_t master = getpid();
  for (int i = 0; i < workers; ++i) {
    if (fork() == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != master) _exit(0);
      FCGX_Init();
      FCGX_Request req;
      FCGX_InitRequest(&req, fd, 0);
      static const char kResponse[] = "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}";
      while (FCGX_Accept_r(&req) >= 0) {
        FCGX_PutStr(kResponse, sizeof(kResponse) - 1, req.out);
        FCGX_Finish_r(&req);
      }
      _exit(0);
    }
  }
  while (wait(nullptr) > 0) {
  }
  return 0;
}
