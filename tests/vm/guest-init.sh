#!/bin/sh
# /init of the VM tests' guest (PID 1 from the initramfs, busybox sh): brings eth0 up, pings a
# peer, optionally serves or fetches a file over TCP, reports on the serial console.
#
# Kernel command line parameters (all optional):
#   vm.ip=10.78.0.1/24    eth0's address
#   vm.peer=10.78.0.2     the address to ping
#   vm.tries=60           first-reply attempts (about 1 s each) before giving up
#   vm.count=3            pings after the first reply; all must be answered (in one of two
#                         rounds, a second apart)
#   vm.http=0             KiB: serve a random file of that size at http://IP:8080/blob (busybox
#                         httpd), started before eth0 gets its address, so a peer that has its
#                         ping answered finds the server up
#   vm.zero=0             MiB: also serve a file of zeros that size at http://IP:8080/zero
#                         (benches/vm.sh downloads it to measure the guest's TCP throughput)
#   vm.fetch=             a URL to download after the first reply (30 tries, 0.5 s apart)
#   vm.watch=0            1: after PASS, ping the peer every 0.1 s until vm.hold ends, one line
#                         per reply ("64 bytes from PEER: seq=N ...")
#   vm.hold=0             seconds to stay up after PASS (answering pings, serving) before
#                         powering off; the harness kills QEMU sooner
# Console lines (each whole, from the start of a line):
#   VMTEST ETH0-UP <uptime> mac=<mac>
#   VMTEST HTTP-MD5 <md5>                   (vm.http) the served file's md5
#   VMTEST FIRST-REPLY <uptime>
#   VMTEST FETCH-MD5 <md5> <bytes>          (vm.fetch) the downloaded file's md5 and size
#   VMTEST LOSSY-ROUND <ping's summary>     a round of vm.count pings had a loss
#   VMTEST PASS | VMTEST FAIL <reason>       (FAIL also when no fetch succeeds)
# then the guest powers off (QEMU exits; with -no-reboot a panic exits too).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev   # Debian's kernel has no DEVTMPFS_MOUNT

up() { cut -d' ' -f1 /proc/uptime; }
fail() {
    echo "VMTEST FAIL $1"
    sync
    poweroff -f
}

IP=10.78.0.1/24 PEER=10.78.0.2 TRIES=60 COUNT=3 HTTP=0 ZERO=0 FETCH="" WATCH=0 HOLD=0
for a in $(cat /proc/cmdline); do
    case "$a" in
        vm.ip=*) IP=${a#vm.ip=} ;;
        vm.peer=*) PEER=${a#vm.peer=} ;;
        vm.tries=*) TRIES=${a#vm.tries=} ;;
        vm.count=*) COUNT=${a#vm.count=} ;;
        vm.http=*) HTTP=${a#vm.http=} ;;
        vm.zero=*) ZERO=${a#vm.zero=} ;;
        vm.fetch=*) FETCH=${a#vm.fetch=} ;;
        vm.watch=*) WATCH=${a#vm.watch=} ;;
        vm.hold=*) HOLD=${a#vm.hold=} ;;
    esac
done

for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko 2>/dev/null
done

i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail no-eth0
    usleep 50000
done

if [ "$HTTP" -gt 0 ] || [ "$ZERO" -gt 0 ]; then
    mkdir -p /www
    [ "$ZERO" -gt 0 ] && dd if=/dev/zero of=/www/zero bs=1048576 count="$ZERO" 2>/dev/null
    [ "$HTTP" -gt 0 ] && dd if=/dev/urandom of=/www/blob bs=1024 count="$HTTP" 2>/dev/null
    httpd -p 8080 -h /www
    [ "$HTTP" -gt 0 ] && echo "VMTEST HTTP-MD5 $(md5sum /www/blob | cut -d' ' -f1)"
fi

ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
echo "VMTEST ETH0-UP $(up) mac=$(cat /sys/class/net/eth0/address)"

i=0
until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -ge "$TRIES" ] && fail "no-reply-from-$PEER"
    usleep 100000   # in case ping fails at once instead of timing out
done
echo "VMTEST FIRST-REPLY $(up)"

if [ -n "$FETCH" ]; then
    i=0
    # (busybox 1.35 wget crashes with -T: timeout bounds it instead)
    until why=$(timeout 10 wget -q -O /tmp/fetched "$FETCH" 2>&1); do
        i=$((i + 1))
        [ $i -ge 30 ] && fail "fetch: $(echo $why)"
        rm -f /tmp/fetched
        usleep 500000
    done
    echo "VMTEST FETCH-MD5 $(md5sum /tmp/fetched | cut -d' ' -f1) $(wc -c < /tmp/fetched)"
    rm -f /tmp/fetched
fi

# A round with a loss is tried once more, a second later: a peer's bulk TCP through the same
# queues (two_guests_talk: the peer downloads this guest's file meanwhile) can hold a reply
# past the deadline on a busy TCG host; loss in two rounds in a row fails.
lossless() {
    out=$(ping -c "$COUNT" -i 0.2 -W 3 "$PEER" 2>&1)
    case "$out" in
        *" 0% packet loss"*) return 0 ;;
        *) echo "VMTEST LOSSY-ROUND $(echo "$out" | grep 'packet loss')"; return 1 ;;
    esac
}
if lossless || { sleep 1; lossless; }; then
    echo "VMTEST PASS"
else
    fail lossy
fi
if [ "$HOLD" -gt 0 ]; then
    if [ "$WATCH" = 1 ]; then
        ping -i 0.1 -w "$HOLD" "$PEER"
    else
        sleep "$HOLD"
    fi
fi
sync
poweroff -f
