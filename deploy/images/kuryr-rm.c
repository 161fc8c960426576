/* kuryr-rm PATH...: unlink each PATH; a missing file is not an error.
 *
 * The daemon image is built FROM scratch (no shell, no coreutils). Its preStop hook runs this
 * to take the CNI conflist and then the kuryr-cni binary off the host before the daemon is
 * stopped, so deleting the DaemonSet (helm uninstall, kubectl delete) leaves nothing behind.
 * Built static by deploy/images/build.sh; no stdio so the binary stays small. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

static void say(const char *a, const char *b) {
  (void)!write(2, "kuryr-rm: ", 10);
  (void)!write(2, a, strlen(a));
  (void)!write(2, b, strlen(b));
  (void)!write(2, "\n", 1);
}

int main(int argc, char **argv) {
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    if (unlink(argv[i]) == 0) {
      say("removed ", argv[i]);
    } else if (errno != ENOENT) {
      say(argv[i], errno == EACCES || errno == EPERM ? ": permission denied" : ": cannot remove");
      rc = 1;
    }
  }
  return rc;
}
