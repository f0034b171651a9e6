# Sourced by slurm/cluster.sh (one node) and slurm/two_nodes.sh: the slurm.conf settings both local
# clusters share. Usage: common_slurm_settings CTLD_PORT SLURMD_PORT
common_slurm_settings() {
  cat <<CONF
SlurmctldPort=$1
SlurmdPort=$2
AuthType=auth/munge
# Credential lifetime; also the delay before a requeued job may start again (default 120 s; at 10 s a
# requeued job restarted 11 s after scontrol requeue here).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=10
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
Waittime=0
MailProg=/bin/true
CONF
}
