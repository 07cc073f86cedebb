/*
 * berth-dmz: the last step into a container.
 *
 * berth-runtime's container process is a clone of berth-runtime, so until it
 * execs, /proc/self/exe is the runtime's binary on the host. A container
 * image whose program is a script starting with "#!/proc/self/exe" would make
 * the kernel run that binary inside the container, where another process
 * could reopen it for writing (CVE-2019-5736). So the runtime does not exec
 * the program itself: it execs this tiny program from a sealed memfd, which
 * then execs the program. /proc/self/exe is then the sealed memfd, which no
 * one can write.
 *
 * Contract: BERTH_DMZ_EXEC=<path> in the environment names the program; it is
 * removed from the environment, and argv is passed on as it is. Started
 * without it (as an interpreter, say), the dmz refuses and exits 127.
 *
 * Freestanding (no libc): a few hundred bytes, so that copying it into a
 * memfd costs nothing measurable.
 */

typedef unsigned long size_t;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_execve 59
#define SYS_exit_group 231
static long sys3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define SYS_write 64
#define SYS_execve 221
#define SYS_exit_group 94
static long sys3(long n, long a, long b, long c)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
#else
#error "berth-dmz: unsupported architecture"
#endif

static size_t len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, (long)len(s)); }

static const char KEY[] = "BERTH_DMZ_EXEC=";

static int has_key(const char *e)
{
    for (size_t i = 0; i < sizeof(KEY) - 1; i++)
        if (e[i] != KEY[i])
            return 0;
    return 1;
}

static const char *reason(long err)
{
    switch (err) {
    case 2: return "no such file or directory";
    case 8: return "exec format error";
    case 13: return "permission denied";
    case 20: return "not a directory";
    case 26: return "text file busy";
    case 40: return "too many levels of symbolic links";
    default: return "exec failed";
    }
}

__attribute__((used)) void dmz_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    const char *path = 0;
    char **out = envp;
    for (char **e = envp; *e; e++) {
        if (has_key(*e)) {
            if (!path)
                path = *e + sizeof(KEY) - 1;
            continue;
        }
        *out++ = *e;
    }
    *out = 0;
    if (!path) {
        say("berth-dmz: not started by berth-runtime; refusing to run\n");
        sys3(SYS_exit_group, 127, 0, 0);
    }
    long err = -sys3(SYS_execve, (long)path, (long)argv, (long)envp);
    say("berth: exec ");
    say(path);
    say(": ");
    say(reason(err));
    say("\n");
    sys3(SYS_exit_group, 127, 0, 0);
}

#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall dmz_main\n\thlt\n");
#elif defined(__aarch64__)
__asm__(".globl _start\n_start:\n\tmov x0, sp\n\tbl dmz_main\n\tbrk #0\n");
#endif
