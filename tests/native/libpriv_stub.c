/*
 * A stand-in for the privilege calls of illumos libc, preloaded (LD_PRELOAD) into a
 * process that runs `dtagent check`: priv_allocset, priv_freeset (priv_set(3C)),
 * getppriv (getppriv(2)) and priv_ismember (priv_addset(3C)).
 *
 * The effective set is $DTAGENT_STUB_PRIVILEGES, a comma-separated list of privilege
 * names (privileges(7)), or "all". As strict as libc: getppriv accepts only the set
 * names of sys/priv_names.h ("Effective", "Inheritable", "Permitted", "Limit") and
 * fails with EINVAL otherwise; priv_ismember of a name that is not a privilege is
 * B_FALSE with errno EINVAL; a set must come from priv_allocset.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define	MAGIC	0x70726976u	/* "priv" */
#define	MAXNAMES	64

typedef struct priv_set {
	unsigned magic;
	int all;
	int count;
	char names[MAXNAMES][32];
} priv_set_t;

/* privileges(7), the names this stand-in knows */
static const char *known[] = {
	"contract_event", "contract_identity", "contract_observer", "cpc_cpu",
	"dtrace_kernel", "dtrace_proc", "dtrace_user", "file_chown", "file_chown_self",
	"file_dac_execute", "file_dac_read", "file_dac_search", "file_dac_write",
	"file_link_any", "file_owner", "file_read", "file_setid", "file_write",
	"ipc_dac_read", "ipc_dac_write", "ipc_owner", "net_access", "net_icmpaccess",
	"net_observability", "net_privaddr", "net_rawaccess", "proc_audit", "proc_chroot",
	"proc_clock_highres", "proc_exec", "proc_fork", "proc_info", "proc_lock_memory",
	"proc_owner", "proc_priocntl", "proc_session", "proc_setid", "proc_taskid",
	"proc_zone", "sys_acct", "sys_admin", "sys_audit", "sys_config", "sys_devices",
	"sys_dl_config", "sys_ip_config", "sys_mount", "sys_net_config", "sys_resource",
	"sys_time", NULL
};

static int
is_known(const char *name)
{
	for (int i = 0; known[i] != NULL; i++)
		if (strcmp(known[i], name) == 0)
			return (1);
	return (0);
}

priv_set_t *
priv_allocset(void)
{
	priv_set_t *sp = calloc(1, sizeof (priv_set_t));
	if (sp != NULL)
		sp->magic = MAGIC;
	return (sp);
}

void
priv_freeset(priv_set_t *sp)
{
	if (sp != NULL && sp->magic == MAGIC) {
		sp->magic = 0;
		free(sp);
	}
}

int
getppriv(const char *which, priv_set_t *sp)
{
	if (which == NULL || sp == NULL || sp->magic != MAGIC ||
	    (strcmp(which, "Effective") != 0 && strcmp(which, "Inheritable") != 0 &&
	    strcmp(which, "Permitted") != 0 && strcmp(which, "Limit") != 0)) {
		errno = EINVAL;
		return (-1);
	}
	const char *env = getenv("DTAGENT_STUB_PRIVILEGES");
	sp->all = 0;
	sp->count = 0;
	if (env == NULL)
		env = "";
	if (strcmp(env, "all") == 0) {
		sp->all = 1;
		return (0);
	}
	char buf[2048];
	strncpy(buf, env, sizeof (buf) - 1);
	buf[sizeof (buf) - 1] = '\0';
	for (char *tok = strtok(buf, ","); tok != NULL && sp->count < MAXNAMES;
	    tok = strtok(NULL, ",")) {
		strncpy(sp->names[sp->count], tok, sizeof (sp->names[0]) - 1);
		sp->count++;
	}
	return (0);
}

int
priv_ismember(const priv_set_t *sp, const char *name)
{
	if (sp == NULL || sp->magic != MAGIC || name == NULL || !is_known(name)) {
		errno = EINVAL;
		return (0);
	}
	if (sp->all)
		return (1);
	for (int i = 0; i < sp->count; i++)
		if (strcmp(sp->names[i], name) == 0)
			return (1);
	return (0);
}
