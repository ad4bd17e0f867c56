/*
 * tcpconn.netstack.d -- the "netstack" variant of tcpconn.d, for platform images
 * whose csinfo_t translator predates zone ids from the credential.  Same
 * aggregations; TCP connect latency per zone: from the SYN a zone sends to the
 * connection being established (the SYN-ACK arriving).
 *
 * Probes and arguments (verified in the sources):
 *   tcp:::connect-request, tcp:::connect-established, tcp:::connect-refused
 *       DTRACE_TCP5(..., mblk_t *, NULL, ip_xmit_attr_t *, connp->conn_ixa,
 *       void_ip_t *, iphdr, tcp_t *, tcp, tcph_t *, tcpha); established and refused
 *       fire in tcp_input.c while the SYN-ACK / RST is processed (squeue or
 *       interrupt context, so curthread says nothing about the zone)
 *       (illumos-gate usr/src/uts/common/inet/tcp/tcp_input.c).
 *   tcp:::state-change  args[3] the connection, args[5]->tcps_state the previous
 *       state.
 *   args[3] tcpsinfo_t: tcps_addr = (uintptr_t) the tcp_t, tcps_state, tcps_iss =
 *       tcp_iss, the initial send sequence number, chosen before the first SYN
 *       (illumos-gate usr/src/lib/libdtrace/common/tcp.d.in).
 *   Zone attribution: the connection's IP stack.  tcp_t->tcp_connp->conn_netstack
 *       (illumos-gate usr/src/uts/common/inet/ipclassifier.h) ->netstack_stackid is
 *       the owning zone's id for an exclusive stack and 0 for the shared (global)
 *       stack (usr/src/uts/common/os/netstack.c: ns->netstack_stackid = zoneid);
 *       ip.d.in's ifinfo_t if_ipstack reads the same field.  So: stack id when
 *       non-zero, else args[1]->cs_zoneid (right for shared-stack zones).  This
 *       walks kernel structures through CTF: a platform image that renames them
 *       makes this variant fail to compile (reported disabled).
 *
 * State: two global entries per connection in SYN-SENT, keyed by the tcp_t
 * address: the start time and the initial sequence number.  Both are deleted when
 * the connection is established or refused or leaves SYN-SENT any other way.  A
 * connection that ends without any of these probes leaves its entries behind; a
 * later connection reusing the tcp_t has another initial sequence number, so it
 * starts afresh at its own connect-request and a stale start is never measured.
 * A retransmitted SYN (same sequence number) keeps the first start time.
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10), true value in sum().
 */

/* Declared up front: the first clause reads the arrays before any assignment. */
uint64_t tcpconn_start[uintptr_t];
uint32_t tcpconn_iss[uintptr_t];

tcp:::connect-request
/tcpconn_start[args[3]->tcps_addr] == 0 ||
    tcpconn_iss[args[3]->tcps_addr] != args[3]->tcps_iss/
{
	tcpconn_start[args[3]->tcps_addr] = timestamp;
	tcpconn_iss[args[3]->tcps_addr] = args[3]->tcps_iss;
}

tcp:::connect-established
/tcpconn_start[args[3]->tcps_addr] != 0 &&
    tcpconn_iss[args[3]->tcps_addr] == args[3]->tcps_iss/
{
	this->tcpconn_ns = (int64_t)(timestamp - tcpconn_start[args[3]->tcps_addr]);
	this->tcpconn_stack =
	    (int)((tcp_t *)arg3)->tcp_connp->conn_netstack->netstack_stackid;
	this->tcpconn_zone = this->tcpconn_stack != 0 ?
	    this->tcpconn_stack : (int)args[1]->cs_zoneid;
	@tcpconn[this->tcpconn_zone] = llquantize(this->tcpconn_ns - 1, 10, 3, 9, 10);
	@tcpconn_sum[this->tcpconn_zone] = sum(this->tcpconn_ns);
}

tcp:::connect-established, tcp:::connect-refused
/tcpconn_start[args[3]->tcps_addr] != 0/
{
	tcpconn_start[args[3]->tcps_addr] = 0;
	tcpconn_iss[args[3]->tcps_addr] = 0;
}

tcp:::state-change
/args[5]->tcps_state == TCP_STATE_SYN_SENT &&
    args[3]->tcps_state != TCP_STATE_ESTABLISHED &&
    tcpconn_start[args[3]->tcps_addr] != 0/
{
	tcpconn_start[args[3]->tcps_addr] = 0;
	tcpconn_iss[args[3]->tcps_addr] = 0;
}
