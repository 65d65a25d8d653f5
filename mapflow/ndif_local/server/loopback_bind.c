/* Loaded into the local NDIF stack's processes with LD_PRELOAD (built by `mapflow ndif up` into the stack's state
 * directory, not by mapflow's install). Ray binds its gRPC servers (GCS, raylet, workers, agents) to every interface
 * and has no setting against it; this bind() moves any IPv4 or IPv6 address that is not loopback to loopback, so
 * every listener of the stack answers on this machine only. Unix sockets and loopback binds pass through unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

static bind_function real_bind(void) {
    static bind_function found;
    if (!found) found = (bind_function)dlsym(RTLD_NEXT, "bind");
    return found;
}

static int is_v4_mapped_loopback(const struct in6_addr *address) {
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(address->s6_addr, prefix, 12) == 0 && address->s6_addr[12] == 127;
}

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    if (address && address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, address, sizeof moved);
        if ((ntohl(moved.sin_addr.s_addr) >> 24) != 127) {
            moved.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind()(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    } else if (address && address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 moved;
        memcpy(&moved, address, sizeof moved);
        if (!IN6_IS_ADDR_LOOPBACK(&moved.sin6_addr) && !is_v4_mapped_loopback(&moved.sin6_addr)) {
            /* ::ffff:127.0.0.1 keeps a dual-stack socket reachable at 127.0.0.1; a v6-only one gets ::1 */
            static const unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
            memcpy(moved.sin6_addr.s6_addr, mapped, 16);
            int result = real_bind()(fd, (const struct sockaddr *)&moved, sizeof moved);
            if (result == 0 || (errno != EINVAL && errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL)) return result;
            moved.sin6_addr = in6addr_loopback;
            return real_bind()(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    }
    return real_bind()(fd, address, length);
}
