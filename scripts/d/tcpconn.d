/*
 * tcpconn.d -- TCP connect latency per zone: from the SYN a zone sends to the
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
 *   args[1] csinfo_t, translated from the ip_xmit_attr_t (binding 1.6.3,
 *       illumos-gate usr/src/lib/libdtrace/common/ip.d.in): cs_zoneid is the zone of
 *       the connection's credential (ixa_cred->cr_zone->zone_id) whenever the
 *       connection is on an exclusive IP stack (netstack id not the global one),
 *       else ixa_zoneid.  So it is the owning zone for exclusive-stack zones (every
 *       SmartOS zone), although tcp.c sets ixa_zoneid to 0 for them, and the zone
 *       for shared-stack zones.  This is a stable translator: no kernel structure
 *       is named here.  On a platform image whose ip.d predates that translator,
 *       cs_zoneid is 0 for exclusive-stack zones: select the "netstack" variant
 *       (tcpconn.netstack.d) in tcpconn.toml, see docs/dtrace.md.
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
	this->tcpconn_zone = (int)args[1]->cs_zoneid;
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
