/* CVE-2019-5736: a process of ours that enters a container (the init until it execs the
 * user's process, exec's child) exposes our binary to the container as /proc/<pid>/exe.
 * A container process that can reach it (the same credentials once ours are dropped, or a
 * script whose interpreter is /proc/self/exe, which runs our binary inside the container)
 * can reopen it for writing once it is no longer executing, and replace the runtime on the
 * host.  So those commands first re-execute themselves from a binary nobody can write to
 * through that link:
 *  - a read-only view of the same file: a detached clone of its mount (open_tree), made
 *    read-only (mount_setattr).  Reopening /proc/<pid>/exe for writing then fails with
 *    EROFS; the clone is in no mount namespace, so nobody can remount it, and exec shares
 *    the page cache of the original, so it costs no copy.  Needs Linux 5.12 and
 *    CAP_SYS_ADMIN;
 *  - otherwise a copy in a memfd, sealed against writes, growing and shrinking (only the
 *    loadable part is copied: exec never reads debug info or section headers).
 * Conceptually what runc does (libcontainer/nsenter/cloned_binary.c: a read-only bind
 * mount, else a sealed memfd); this is our own implementation.  Cost: one more execve.
 * _PROVISION_RUNTIME_SEAL=memfd forces the copy (for the tests of that path). */
#include "sealed.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "syscalls.h"
#include "util.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3: ask for an executable memfd when vm.memfd_noexec is set */
#endif

#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

extern char **environ;

/* Nobody can open it for writing: a sealed memfd, or a file on a read-only mount. */
static bool is_sealed(int fd) {
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0) return (seals & SEALS) == SEALS;
  struct statvfs vfs;
  return fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY);
}

/* O_PATH descriptor of our binary on a read-only detached clone of its mount, or -1. */
static int readonly_clone(void) {
  int fd = sys_open_tree(AT_FDCWD, "/proc/self/exe", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (fd < 0) return -1;
  struct pr_mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
  if (sys_mount_setattr(fd, "", AT_EMPTY_PATH, &attr) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* How much of the ELF file exec needs: up to the end of the last thing a program header
 * points at (segments, interpreter path, notes).  The whole file if it does not look like
 * the 64-bit ELF we were built as. */
static off_t loadable_size(int fd, Elf64_Ehdr *eh) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -1;
  memset(eh, 0, sizeof *eh);
  if (pread(fd, eh, sizeof *eh, 0) != (ssize_t)sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
      eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
      eh->e_phnum > 64) {
    eh->e_shoff = 0;
    return st.st_size;
  }
  Elf64_Phdr ph[64];
  size_t len = eh->e_phnum * sizeof(Elf64_Phdr);
  if (pread(fd, ph, len, (off_t)eh->e_phoff) != (ssize_t)len) return st.st_size;
  uint64_t end = eh->e_phoff + len;
  for (int i = 0; i < eh->e_phnum; i++)
    if (ph[i].p_offset + ph[i].p_filesz > end) end = ph[i].p_offset + ph[i].p_filesz;
  return end < (uint64_t)st.st_size ? (off_t)end : st.st_size;
}

/* A sealed memfd holding the loadable part of self (an ELF without section headers). */
static int sealed_copy(int self, pr_error *err) {
  Elf64_Ehdr eh;
  off_t size = loadable_size(self, &eh);
  if (size < 0) return pr_fail(err, errno, "reading the runtime's ELF headers");
  cleanup_close int copy = memfd_create("provision-runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
  if (copy < 0 && errno == EINVAL) /* kernels before 6.3 know no MFD_EXEC; theirs are executable */
    copy = memfd_create("provision-runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (copy < 0) return pr_fail(err, errno, "memfd_create for a sealed copy of the runtime");
  for (off_t done = 0; done < size;) {
    ssize_t n = sendfile(copy, self, NULL, (size_t)(size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return pr_fail(err, n < 0 ? errno : EIO, "copying the runtime into a memfd");
    done += n;
  }
  if ((uint64_t)size < eh.e_shoff) {
    /* the section headers were left behind: say there are none */
    eh.e_shoff = 0;
    eh.e_shnum = eh.e_shstrndx = 0;
    if (pwrite(copy, &eh, sizeof eh, 0) != (ssize_t)sizeof eh) return pr_fail(err, errno, "writing the copy's ELF header");
  }
  if (fcntl(copy, F_ADD_SEALS, SEALS) < 0) return pr_fail(err, errno, "sealing the runtime's copy");
  return steal_fd(&copy);
}

int sealed_reexec(char **argv, pr_error *err) {
  cleanup_close int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) return pr_fail(err, errno, "opening /proc/self/exe to run from a sealed binary");
  if (is_sealed(self)) return 0;
  const char *mode = getenv("_PROVISION_RUNTIME_SEAL");
  cleanup_close int fd = mode && strcmp(mode, "memfd") == 0 ? -1 : readonly_clone();
  if (fd < 0 && (fd = sealed_copy(self, err)) < 0) return -1;
  fexecve(fd, argv, environ);
  return pr_fail(err, errno, "re-executing the runtime from its sealed binary");
}
