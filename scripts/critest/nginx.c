/* A stand-in for nginx in critest's web server image: PID file, process
 * title "nginx: master process nginx", busybox httpd as its worker. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static pid_t worker;
static void stop(int sig) { if (worker > 0) kill(worker, SIGTERM); _exit(0); }
int main(int argc, char **argv) {
    if (strcmp(argv[0], "nginx: master process nginx") != 0) {
        /* (the file's own path: the process name comes from it) */
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0) return 127;
        self[n] = 0;
        char *args[] = {"nginx: master process nginx", NULL};
        execv(self, args);
        return 127;
    }
    FILE *f = fopen("/var/run/nginx.pid", "w");
    if (f) { fprintf(f, "%d\n", getpid()); fclose(f); }
    signal(SIGTERM, stop); signal(SIGINT, stop); signal(SIGQUIT, stop);
    worker = fork();
    if (worker == 0) {
        execl("/bin/httpd", "httpd", "-f", "-p", "80", "-h", "/var/www", (char *)NULL);
        _exit(127);
    }
    for (;;) {
        int status;
        pid_t p = wait(&status);
        if (p == worker) return 1;
        if (p < 0) pause();
    }
}
