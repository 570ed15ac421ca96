"""Run one RouterOS command line (read from stdin) on an RDS over SSH; print its output and exit
with its exit status. Usage: rds_cmd.py HOST PORT USER PASSWORD_FILE < line"""

import sys

import paramiko


def main() -> int:
    host, port, user, pw_file = sys.argv[1:5]
    line = sys.stdin.read().strip()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with open(pw_file) as f:
        password = f.read().strip()
    client.connect(host, int(port), user, password, allow_agent=False, look_for_keys=False,
                   timeout=30)
    try:
        _, stdout, _ = client.exec_command(line, timeout=60)
        out = stdout.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
    finally:
        client.close()
    sys.stdout.write(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
