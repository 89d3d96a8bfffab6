# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tc_global_optspecs
    string join \n v/verbose q/quiet progress= h/help V/version
end

function __fish_tc_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tc_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tc_using_subcommand
    set -l cmd (__fish_tc_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tc -n "__fish_tc_needs_command" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_needs_command" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_needs_command" -s V -l version -d 'Print version'
complete -c tc -n "__fish_tc_needs_command" -f -a "cpe" -d 'Drive a CPE\'s own debug capture over its REST API and fetch the pcap over SFTP'
complete -c tc -n "__fish_tc_needs_command" -f -a "ovoc" -d 'The capture agent on each OVOC server, and a client to talk to it'
complete -c tc -n "__fish_tc_needs_command" -f -a "alarm" -d 'Receive OVOC\'s forwarded alarms (syslog over UDP) as JSON lines'
complete -c tc -n "__fish_tc_needs_command" -f -a "session" -d 'The whole capture workflow for a fleet, unattended: capture both sides until OVOC reports Connection Lost, then collect and name the evidence; repeat up to --max-events'
complete -c tc -n "__fish_tc_needs_command" -f -a "analyze" -d 'Say which side of the WAN lost the traffic: match the CPE\'s capture against the OVOC capture of the same device, correct the clocks, and report what never arrived'
complete -c tc -n "__fish_tc_needs_command" -f -a "report" -d 'One self-contained HTML file for an incident from a session\'s --out: the devices and their verdicts, each round\'s timeline, loss windows, clock offset and files (with sha256), and the task log'
complete -c tc -n "__fish_tc_needs_command" -f -a "lab" -d 'Emulated CPEs and OVOC for rehearsals and tests (no production device is touched)'
complete -c tc -n "__fish_tc_needs_command" -f -a "generate" -d 'Write the man pages and shell completions (for packaging; output is committed)'
complete -c tc -n "__fish_tc_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -f -a "start" -d 'Start the debug capture on each device and confirm it is active'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -f -a "stop" -d 'Stop the debug capture on each device and confirm it is not active'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -f -a "status" -d 'Report capture state (active or not), product type, version and serial of each device'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -f -a "fetch" -d 'Download each device\'s capture file over SFTP (stop the capture first)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and not __fish_seen_subcommand_from start stop status fetch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l device -d 'A device address or host name (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l devices -d 'CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256]' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l type -d 'Device type; read from the device\'s productType when absent' -r -f -a "msbr\t'MSBR router: data-plane capture on the chosen WAN/LAN interfaces'
gwsbc\t'Mediant gateway or SBC: VoIP-plane capture on eth-lan'"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l interface -d 'MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan. Gateways and SBCs always use eth-lan' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l username -d 'Device user (Administrator level for start/stop; the inventory\'s username column wins)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l password-file -d 'Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l rest-port -d 'Device REST API (HTTPS) port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l ssh-port -d 'Device SSH/SFTP port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l jobs -d 'Devices worked on at once' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l retries -d 'Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l timeout -d 'Timeout of each request (e.g. 500ms, 10s)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l snmp-user -d 'Also (re)create this SNMPv3 user for probe traffic (keys from TC_SNMP_AUTH_KEY and TC_SNMP_PRIV_KEY; SHA-1/AES-128). Note that the device\'s `write` saves its configuration' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l device -d 'A device address or host name (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l devices -d 'CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256]' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l type -d 'Device type; read from the device\'s productType when absent' -r -f -a "msbr\t'MSBR router: data-plane capture on the chosen WAN/LAN interfaces'
gwsbc\t'Mediant gateway or SBC: VoIP-plane capture on eth-lan'"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l interface -d 'MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan. Gateways and SBCs always use eth-lan' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l username -d 'Device user (Administrator level for start/stop; the inventory\'s username column wins)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l password-file -d 'Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l rest-port -d 'Device REST API (HTTPS) port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l ssh-port -d 'Device SSH/SFTP port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l jobs -d 'Devices worked on at once' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l retries -d 'Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l timeout -d 'Timeout of each request (e.g. 500ms, 10s)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l device -d 'A device address or host name (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l devices -d 'CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256]' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l type -d 'Device type; read from the device\'s productType when absent' -r -f -a "msbr\t'MSBR router: data-plane capture on the chosen WAN/LAN interfaces'
gwsbc\t'Mediant gateway or SBC: VoIP-plane capture on eth-lan'"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l interface -d 'MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan. Gateways and SBCs always use eth-lan' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l username -d 'Device user (Administrator level for start/stop; the inventory\'s username column wins)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l password-file -d 'Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l rest-port -d 'Device REST API (HTTPS) port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l ssh-port -d 'Device SSH/SFTP port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l jobs -d 'Devices worked on at once' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l retries -d 'Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l timeout -d 'Timeout of each request (e.g. 500ms, 10s)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l device -d 'A device address or host name (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l devices -d 'CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256]' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l type -d 'Device type; read from the device\'s productType when absent' -r -f -a "msbr\t'MSBR router: data-plane capture on the chosen WAN/LAN interfaces'
gwsbc\t'Mediant gateway or SBC: VoIP-plane capture on eth-lan'"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l interface -d 'MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan. Gateways and SBCs always use eth-lan' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l username -d 'Device user (Administrator level for start/stop; the inventory\'s username column wins)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l password-file -d 'Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l rest-port -d 'Device REST API (HTTPS) port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l ssh-port -d 'Device SSH/SFTP port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l jobs -d 'Devices worked on at once' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l retries -d 'Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l timeout -d 'Timeout of each request (e.g. 500ms, 10s)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l out -d 'Directory for the pcaps (CPE_device_<device>_<time>.pcap)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l remote-path -d 'Remote capture file (default /debug-capture/debug-capture-data.pcap for both types)' -r
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l known-hosts -d 'known_hosts file checked (and, with --accept-new-host-key, extended)' -r -F
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -l accept-new-host-key -d 'Record the host key of a device never seen before (a changed key is always refused)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from fetch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start the debug capture on each device and confirm it is active'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop the debug capture on each device and confirm it is not active'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from help" -f -a "status" -d 'Report capture state (active or not), product type, version and serial of each device'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from help" -f -a "fetch" -d 'Download each device\'s capture file over SFTP (stop the capture first)'
complete -c tc -n "__fish_tc_using_subcommand cpe; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -f -a "serve" -d 'Run the capture agent (as root): tcpdump per CPE, OVOC forwarding rules, probes, driven by the UDP request protocol (REGISTER, CAPTURE, VERIFY, STOP) of trafficCapture 1.0.6'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -f -a "send" -d 'Send one request to an agent and print its responses as JSON lines'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -f -a "fetch" -d 'Download one round\'s OVOC files (every ring file the agent renamed at STOP) from an OVOC server over SFTP; one `ovoc.fetched` line per file'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and not __fish_seen_subcommand_from serve send fetch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l interface -d 'Interface tcpdump captures on (see /proc/net/dev)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l listen -d 'UDP address for requests' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l dir -d 'Directory for captures and the agent\'s state (.tc/)' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ring-files -d 'tcpdump ring: number of files per capture (-W)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ring-size -d 'tcpdump ring: size of each file in millions of bytes (-C)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l buffer-size -d 'Kernel capture buffer per capture, in KiB (tcpdump -B). One device\'s management traffic needs little; libpcap\'s 2 MiB default costs 2 GB of kernel memory at 1,000 captures' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l allow -d 'Accept requests only from these networks (repeatable, or comma-separated)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ovoc-url -d 'OVOC REST API base URL' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ovoc-user -d 'OVOC user (Operator level or above)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ovoc-password-file -d 'Read the OVOC password from FILE (else TC_OVOC_PASSWORD)' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l rule-idle -d 'Delete a device\'s forwarding rule after this long without requests and capture' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l probes -d 'Probes for VERIFY: any of icmp,snmp,tcp, or all, or none' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l probe-count -d 'Probes of each kind per VERIFY' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l probe-interval -d 'Between two probes of one kind; each waits for its answer until the next is due (the last one 2 s)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l snmp-user -d 'SNMPv3 user for the probe (keys from TC_SNMP_AUTH_KEY / TC_SNMP_PRIV_KEY)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l tcpdump -d 'tcpdump program' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l tcpdump-user -d 'User tcpdump drops privileges to (-Z); DIR is made writable for it. Default: tcpdump if that user exists, else root' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l start-timeout -d 'How long tcpdump may take to report it is capturing' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l stop-flush -d 'From STOP (or the agent\'s shutdown) to tcpdump\'s SIGTERM: tcpdump receives packets from the kernel in blocks handed over up to 1 s after their first packet, so a quicker SIGTERM loses the capture\'s last second' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l stop-grace -d 'After SIGTERM, how long before tcpdump gets SIGKILL' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l max-captures -d 'Captures at once (starting, running or stopping); CAPTURE past it is answered 503' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l min-free -d 'Refuse new captures (503) when DIR\'s filesystem has less free than this. Running captures end when it is full (tcpdump cannot write)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l disk-budget -d 'Refuse new captures (503) when DIR\'s captures, with every running capture and the new one at their largest ring, would use more than this. Default: no budget' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l rate-limit -d 'Requests per second from one source address (a burst of twice that is allowed); past it datagrams are dropped and counted' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l max-verifies -d 'VERIFY probe runs at once (all sources); past it VERIFY is answered 503' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l verify-rate -d 'New VERIFY probe runs per second (all sources; a burst of --max-verifies is allowed)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l key-file -d 'Shared key: requests must carry its HMAC-SHA256 (README: authentication), answers to them carry one too. The file holds at least 16 bytes; it must not be readable by others' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l allow-unauthenticated -d 'With --key-file: plain 1.0.6 requests are still accepted from these networks (original controllers in a mixed fleet). Repeatable, or comma-separated' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l allow-any -d 'Accept requests from anywhere (the original\'s behaviour; the agent runs as root)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l no-ovoc-rules -d 'Answer REGISTER without OVOC\'s REST API (rules set by hand)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -l server -d 'The agent: HOST or HOST:PORT (default port 20001)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -l bind -d 'Local address to send from (the agent answers there; REGISTER points OVOC\'s rule at it)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -l timeout -d 'How long to wait for the final response' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -l key-file -d 'The agent\'s shared key (tc ovoc serve --key-file): the request is signed and only answers carrying a valid MAC are taken' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from send" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l server -d 'The OVOC server (host name or address) whose agent captured the round' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l ovoc-ssh-user -d 'SSH user on the OVOC servers (it must be able to read the agent\'s directory: root, or a member of the tcpdump user\'s group)' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l ovoc-ssh-port -d 'SSH port of the OVOC servers' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l ovoc-ssh-key -d 'Private key for the OVOC login (passphrase from TC_OVOC_SSH_KEY_PASSPHRASE). Without it: a password from TC_OVOC_SSH_PASSWORD or --ovoc-ssh-password-file, else the ssh-agent (SSH_AUTH_SOCK), else a prompt on the terminal' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l ovoc-ssh-password-file -d 'Read the OVOC SSH password from FILE (else TC_OVOC_SSH_PASSWORD)' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l ovoc-dir -d 'The agent\'s directory on the OVOC servers, as the SSH login sees it: `tc ovoc serve --dir` (contrib/tc-ovoc.service: /var/lib/tc-ovoc/captures); the original agent\'s is `captures` under the directory it was started in' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l out -d 'Directory the files are written to' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l known-hosts -d 'known_hosts file (default ~/.ssh/known_hosts)' -r -F
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l timeout -d 'Connect and read timeout' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l retries -d 'Attempts after the first, when the server is unreachable or a transfer is cut' -r
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -l accept-new-host-key -d 'Record the host key of a server never seen before (a changed key is always refused)'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from fetch" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Run the capture agent (as root): tcpdump per CPE, OVOC forwarding rules, probes, driven by the UDP request protocol (REGISTER, CAPTURE, VERIFY, STOP) of trafficCapture 1.0.6'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from help" -f -a "send" -d 'Send one request to an agent and print its responses as JSON lines'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from help" -f -a "fetch" -d 'Download one round\'s OVOC files (every ring file the agent renamed at STOP) from an OVOC server over SFTP; one `ovoc.fetched` line per file'
complete -c tc -n "__fish_tc_using_subcommand ovoc; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -f -a "listen" -d 'Listen for forwarded alarms; print each as an `alarm` line (others as `syslog.unparsed`)'
complete -c tc -n "__fish_tc_using_subcommand alarm; and not __fish_seen_subcommand_from listen help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l listen -d 'UDP address to receive syslog on (OVOC\'s forwarding rule points here)' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l alarm -d 'Only alarms with this name, case-insensitive (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l description -d 'Only alarms with this description, case-insensitive (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l device -d 'Only alarms for this device address (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l from -d 'Accept datagrams only from these networks (repeatable, or comma-separated); others are counted and dropped' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l count -d 'Exit 0 after N matching alarms' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l timeout -d 'Exit 1 if fewer than --count (or no) alarms matched within DURATION' -r
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l quiet-unparsed -d 'Count lines that are not alarms instead of printing them'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -l bare -d 'Benchmark baseline: receive and count datagrams without parsing or printing them'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from listen" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from help" -f -a "listen" -d 'Listen for forwarded alarms; print each as an `alarm` line (others as `syslog.unparsed`)'
complete -c tc -n "__fish_tc_using_subcommand alarm; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l device -d 'A device address or host name (repeatable)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l devices -d 'CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256]' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l type -d 'Device type; read from the device\'s productType when absent' -r -f -a "msbr\t'MSBR router: data-plane capture on the chosen WAN/LAN interfaces'
gwsbc\t'Mediant gateway or SBC: VoIP-plane capture on eth-lan'"
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l interface -d 'MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan, eth-wan, eth-lan. Gateways and SBCs always use eth-lan' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l username -d 'Device user (Administrator level for start/stop; the inventory\'s username column wins)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l password-file -d 'Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt)' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l rest-port -d 'Device REST API (HTTPS) port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ssh-port -d 'Device SSH/SFTP port, unless the inventory says otherwise' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l jobs -d 'Devices worked on at once' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l retries -d 'Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l timeout -d 'Timeout of each request (e.g. 500ms, 10s)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ca-cert -d 'Trust the CA certificates (PEM) in FILE instead of the system\'s' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l pin-sha256 -d 'Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices\' self-signed certificates. The inventory\'s pin_sha256 column sets it per device' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l listen -d 'UDP address for agent responses and forwarded alarms (one socket for both)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-port -d 'The agents\' UDP port, unless the inventory\'s ovoc column names one' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc -d 'Agent for devices whose inventory row has no ovoc column value' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l max-events -d 'Capture rounds per device (0 = until interrupted)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l agent-key -d 'The shared key of an agent run with --key-file: its requests are signed and only its signed answers taken (repeatable; agents without one get plain 1.0.6 datagrams)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l register-attempts -d 'REGISTER sends before a device is given up (a REGISTER a tc agent acknowledged is given up only 60 s after its first `101`, however many sends that takes)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l register -d '`never`: skip REGISTER and start with CAPTURE, for OVOC forwarding rules set by hand and for 1.0.1 agents, which ignore REGISTER' -r -f -a "always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l fetch-retry-interval -d 'Wait between attempts to stop or fetch from an unreachable device' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l resend -d 'Wait before resending an unanswered request to an agent, doubled per resend up to 8x. A request answered `100 Trying` is never resent while its final answer may still come (60 s, VERIFY 120 s; 15 s and twice the probe time from an agent seen to be `tc`)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l alarm-jobs -d 'Most devices whose alarm is handled at once (CPE stop and probes; threads start when alarms arrive and end when idle). --jobs bounds starts and fetches only' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l out -d 'Directory for the CPE captures, the journal and (by default) the report' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l report -d 'CSV report, appended as tasks finish (default OUT/report.csv)' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l probes -d 'Probes on Connection Lost, from the agent and from here: any of icmp,snmp,tcp, all, none' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l probe-count -d 'Probes of each kind per VERIFY' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l probe-interval -d 'Between two probes of one kind; each waits for its answer until the next is due (the last one 2 s)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l snmp-user -d 'SNMPv3 user created on each CPE at start and used by the probes (keys from TC_SNMP_AUTH_KEY / TC_SNMP_PRIV_KEY)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l known-hosts -d 'known_hosts file for the SFTP fetch' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l remote-path -d 'Remote capture file on the devices' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l alarm-from -d 'Who may send alarms (repeatable): a CIDR, or `ovoc` for the addresses of the inventory\'s ovoc column (the default when not given). Alarms from anyone else change nothing' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l wind-down -d 'After SIGINT/SIGTERM/SIGHUP, how long stopping captures, fetching, STOP (and with --collect-ovoc collecting and analysing) may take; then the session exits 130 and says what is left, which --resume finishes' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l group -d 'Make the captures, report and journal readable by this group (0640, directories 0750) instead of the owner alone (0600, 0700)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-ssh-user -d 'SSH user on the OVOC servers (it must be able to read the agent\'s directory: root, or a member of the tcpdump user\'s group)' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-ssh-port -d 'SSH port of the OVOC servers' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-ssh-key -d 'Private key for the OVOC login (passphrase from TC_OVOC_SSH_KEY_PASSPHRASE). Without it: a password from TC_OVOC_SSH_PASSWORD or --ovoc-ssh-password-file, else the ssh-agent (SSH_AUTH_SOCK), else a prompt on the terminal' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-ssh-password-file -d 'Read the OVOC SSH password from FILE (else TC_OVOC_SSH_PASSWORD)' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l ovoc-dir -d 'The agent\'s directory on the OVOC servers, as the SSH login sees it: `tc ovoc serve --dir` (contrib/tc-ovoc.service: /var/lib/tc-ovoc/captures); the original agent\'s is `captures` under the directory it was started in' -r
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l insecure -d 'Do not verify TLS certificates at all (warns on stderr)'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l accept-new-host-key -d 'Record host keys of devices never seen before (a changed key is always refused)'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l resume -d 'Continue the session journaled in OUT after a crash or reboot'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -l collect-ovoc -d 'After each round\'s STOP, download its OVOC files from the device\'s OVOC server over SFTP and analyse both sides: OUT/<device>/<round>/ holds the CPE file, the OVOC files, analysis.jsonl, merged.pcapng and timeline.svg; the verdict is in the report'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -f -a "status" -d 'How a running or finished session stands, per device: its step, round, when its captures started, the alarm, its files so far and the verdict. Reads the journal and the report only: the session is never disturbed'
complete -c tc -n "__fish_tc_using_subcommand session; and not __fish_seen_subcommand_from status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -l out -d 'The session\'s --out' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -l report -d 'The session\'s CSV report, if it was not OUT/report.csv (`tc session --report`)' -r -F
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "status" -d 'How a running or finished session stands, per device: its step, round, when its captures started, the alarm, its files so far and the verdict. Reads the journal and the report only: the session is never disturbed'
complete -c tc -n "__fish_tc_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand analyze" -l cpe -d 'The CPE\'s capture (pcap or pcapng), as `tc cpe fetch` names it' -r -F
complete -c tc -n "__fish_tc_using_subcommand analyze" -l ovoc -d 'An OVOC-side capture file (repeatable: every file of the agent\'s ring, in any order; they are put in time order by their packets)' -r -F
complete -c tc -n "__fish_tc_using_subcommand analyze" -l device -d 'The device\'s address in the OVOC capture (default: from the file names tc writes)' -r
complete -c tc -n "__fish_tc_using_subcommand analyze" -l ovoc-addr -d 'The OVOC server\'s address as the CPE sees it, if NAT changes it (default: the CPE-side peer whose packets match the OVOC capture\'s)' -r
complete -c tc -n "__fish_tc_using_subcommand analyze" -l offset -d 'CPE clock minus OVOC clock (e.g. 1.5s, -250ms, 0), instead of the estimate' -r
complete -c tc -n "__fish_tc_using_subcommand analyze" -l drift-ppm -d 'With --offset: the CPE clock\'s drift in ppm (default 0)' -r
complete -c tc -n "__fish_tc_using_subcommand analyze" -l merge -d 'Write one time-aligned pcapng of both captures (CPE times corrected to the OVOC clock; packets lost in transit carry a comment)' -r -F
complete -c tc -n "__fish_tc_using_subcommand analyze" -l plot -d 'Write a timeline (SVG): packets sent and seen per direction, loss windows shaded' -r -F
complete -c tc -n "__fish_tc_using_subcommand analyze" -l alarm-at -d 'When OVOC raised the alarm (RFC 3339, OVOC clock), marked on the timeline' -r
complete -c tc -n "__fish_tc_using_subcommand analyze" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand analyze" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand analyze" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand analyze" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand report" -l out -d 'The session\'s --out' -r -F
complete -c tc -n "__fish_tc_using_subcommand report" -l html -d 'The HTML file to write' -r -F
complete -c tc -n "__fish_tc_using_subcommand report" -l report -d 'The session\'s CSV report, if it was not OUT/report.csv (`tc session --report`)' -r -F
complete -c tc -n "__fish_tc_using_subcommand report" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand report" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand report" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand report" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "up" -d 'Serve emulated CPEs (REST over HTTPS, SFTP via a real sshd) until SIGINT/SIGTERM'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "alarm" -d 'Make the lab\'s emulated OVOC forward an alarm for DEVICE to the destination of the rule an agent registered for it ("Connection Lost", or "Connection established" with --clear)'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "demo" -d 'A complete session in one command: emulated CPEs behind a real router, the emulated OVOC polling them, a real agent with real tcpdump, `tc session`, traffic, a fault injected on the WAN, OVOC\'s Connection Lost, and each device\'s verdict. Needs root'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "down" -d 'Make an emulated device\'s REST API unreachable for a while (requests get no answer) (fault injection for rehearsals)'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "wan" -d 'Inject a fault on a `tc lab up --wan` lab: drop at its router what OVOC sends to DEVICE, what DEVICE sends, or both, or silence DEVICE\'s SNMP agent; for a while or until --restore. Needs root, like the lab'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "cleanup" -d 'Remove what a `tc lab up` that was killed left on the system: its system user, and with --dir its chroots, its WAN (namespaces, links, rules, the processes in them) and the directory'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "captures" -d 'Write a generated pair of captures (OVOC side and CPE side) and what `tc analyze` should find in them (truth.json): for tests and benchmarks'
complete -c tc -n "__fish_tc_using_subcommand lab; and not __fish_seen_subcommand_from up alarm demo down wan cleanup captures help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l dir -d 'Lab directory (inventory, env file, certificates, sshd config, capture files)' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l devices -d 'Number of emulated devices (alternating MSBR and gateway/SBC)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l latency-ms -d 'Added delay before every REST answer, in milliseconds' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l busy-first -d 'Answer the first N cliScript requests of each device with 409 Busy' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l subnet -d 'Third octet of the first device address (127.0.<N>.1; with --wan 198.19.<N>.1)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l rest-port -d 'REST port of every device (0 picks a free one). Tools that hard-code the real devices\' ports, such as the original controller (443 and 22), need `--rest-port 443 --ssh-port 22`' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l ssh-port -d 'SSH port of every device (0 picks a free one)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l capture-bytes -d 'Size of each device\'s capture file; padded with generated packets after the real ones' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l cut-sftp-after -d 'Cut each device\'s first SFTP connection after this many bytes (fault injection)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l ssh-ciphers -d 'The only SSH ciphers the lab\'s sshd offers (sshd_config\'s Ciphers, comma-separated), to rehearse a device or server that knows only some, e.g. aes128-ctr or aes256-cbc' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l user -d 'System user the lab creates for SFTP logins (and uses as the REST admin); removed on exit if the lab created it' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l sftp-root -d 'Root-owned directory for the per-device SFTP chroots (sshd refuses group/world-writable path components such as /tmp)' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l clock-offset -d 'With --wan: the devices\' clocks, and so their captures\' timestamps, this far from the host\'s (e.g. 3.5s, -200ms)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l clock-drift -d 'With --wan: ... running this many parts per million fast (negative: slow)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l poll-interval -d 'With --wan: the emulated OVOC\'s SNMP poll of each device' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l poll-misses -d 'With --wan: missed polls in a row that make OVOC raise Connection Lost' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l live-captures -d 'While a device\'s capture is active, record the traffic to it with tcpdump and serve that as its capture file when the capture stops (as a real device does)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l no-sftp -d 'Do not start sshd (REST only; no root needed)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l log-requests -d 'Print a lab.request line for every REST request answered'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l wan -d 'Put a real router between this host (the OVOC side) and the devices: network namespaces and veth pairs, devices at 198.19.<subnet>.N, the agent\'s interface tclab<subnet>-o, the emulated OVOC polling each device over SNMP. Implies --live-captures; at most 100 devices'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -l nat -d 'With --wan: the devices behind a 1:1 NAT router (own addresses 100.64.<subnet>.N; OVOC sees 198.19.<subnet>.N, and connections the devices open from other source ports)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from up" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -l dir -d 'The lab directory given to `tc lab up`' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -l clear -d 'Send the clear ("Connection established") instead'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from alarm" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l dir -d 'Where the lab, the captures and the report go (default: a new directory under /tmp)' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l devices -d 'Number of emulated devices (alternating MSBR and gateway/SBC)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l fault -d 'The fault the router injects a few seconds into the captures, on every device: OVOC\'s traffic dropped on the way to the device, the device\'s dropped on the way to OVOC, the device\'s SNMP agent silent, or none (then the demo raises Connection Lost itself)' -r -f -a "ovoc-to-cpe\t''
cpe-to-ovoc\t''
cpe-silent\t''
none\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l clock-offset -d 'The devices\' clocks, and so their captures\' timestamps, this far from the host\'s' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l clock-drift -d '... and running this many parts per million fast (negative: slow)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -l nat -d 'The devices behind a NAT router (other addresses and ports on the OVOC side)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from demo" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -l dir -d 'The lab directory given to `tc lab up`' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -l for -d 'How long (e.g. 90s); 0 brings it back at once' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from down" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l dir -d 'The lab directory given to `tc lab up --wan`' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l drop -d 'Drop this traffic at the router (an nftables rule: the packets really never arrive)' -r -f -a "to-device\t'What OVOC (and the controller) send to the device'
from-device\t'What the device sends'
both\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l for -d 'End the fault after this long (the kernel ends it, whatever happens to this command); default: until --restore' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l silent -d 'The device\'s SNMP agent stops answering; requests still arrive (its capture shows them)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -l restore -d 'End every fault on the device'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from wan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -l user -d 'The lab\'s system user to remove' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -l dir -d 'Also delete this lab directory' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from cleanup" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l dir -d 'Output directory' -r -F
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l seconds -d 'Simulated duration' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l rate -d 'Traffic rate multiplier (1 = an SNMP poll a second, syslog twice a second, ...)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l seed -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l start -d 'Start of the simulated time (OVOC clock)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l offset -d 'CPE clock minus OVOC clock at the start' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l drift-ppm -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l delay-ms -d 'Minimum one-way delay OVOC to CPE (and CPE to OVOC unless --delay-up-ms), ms' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l delay-up-ms -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l jitter-ms -d 'Largest queueing delay above the minimum, ms' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l drop -d 'Drop packets in transit in this direction (ovoc_to_cpe, cpe_to_ovoc, both)' -r -f -a "ovoc_to_cpe\t''
cpe_to_ovoc\t''
both\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l drop-class -d 'Only packets of this class (snmp, icmp, tcp:443, syslog, snmp_trap)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l drop-from -d 'Seconds after the start' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l drop-until -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-silent-from -d 'The CPE sends nothing from this second on (requests still arrive)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l ovoc-silent-from -d 'OVOC sends nothing to the CPE from this second on' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-start -d 'Capture windows, seconds after the start' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-end -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l ovoc-start -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l ovoc-end -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-format -d 'pcap (µs), pcap-ns, or pcapng (two interfaces: LAN on Ethernet, WAN on Linux cooked v2)' -r -f -a "pcap\t''
pcap-ns\t''
pcapng\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l ring-bytes -d 'OVOC\'s capture as tcpdump\'s `-C BYTES -W 3` ring' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-snaplen -d 'The CPE\'s classic pcap cut to this snap length (tcpdump -s), and declaring it' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-step -d 'The CPE\'s clock steps by this much (an NTP step) at --cpe-step-at' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-step-at -d 'Seconds after the start' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l cpe-capture-drops -d 'With --cpe-format pcapng: the drops its capture statistics state (isb_ifdrop)' -r
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l nat -d 'The CPE behind NAT: other addresses for itself and OVOC, client ports rewritten'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -l ipv6
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from captures" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "up" -d 'Serve emulated CPEs (REST over HTTPS, SFTP via a real sshd) until SIGINT/SIGTERM'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "alarm" -d 'Make the lab\'s emulated OVOC forward an alarm for DEVICE to the destination of the rule an agent registered for it ("Connection Lost", or "Connection established" with --clear)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "demo" -d 'A complete session in one command: emulated CPEs behind a real router, the emulated OVOC polling them, a real agent with real tcpdump, `tc session`, traffic, a fault injected on the WAN, OVOC\'s Connection Lost, and each device\'s verdict. Needs root'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "down" -d 'Make an emulated device\'s REST API unreachable for a while (requests get no answer) (fault injection for rehearsals)'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "wan" -d 'Inject a fault on a `tc lab up --wan` lab: drop at its router what OVOC sends to DEVICE, what DEVICE sends, or both, or silence DEVICE\'s SNMP agent; for a while or until --restore. Needs root, like the lab'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "cleanup" -d 'Remove what a `tc lab up` that was killed left on the system: its system user, and with --dir its chroots, its WAN (namespaces, links, rules, the processes in them) and the directory'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "captures" -d 'Write a generated pair of captures (OVOC side and CPE side) and what `tc analyze` should find in them (truth.json): for tests and benchmarks'
complete -c tc -n "__fish_tc_using_subcommand lab; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand generate" -l progress -d 'Progress on stderr (transfers, the session\'s status line): `auto` when stderr is a terminal, never in pipes or logs' -r -f -a "auto\t''
always\t''
never\t''"
complete -c tc -n "__fish_tc_using_subcommand generate" -s v -l verbose -d 'More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides'
complete -c tc -n "__fish_tc_using_subcommand generate" -s q -l quiet -d 'Only errors on stderr'
complete -c tc -n "__fish_tc_using_subcommand generate" -s h -l help -d 'Print help'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "cpe" -d 'Drive a CPE\'s own debug capture over its REST API and fetch the pcap over SFTP'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "ovoc" -d 'The capture agent on each OVOC server, and a client to talk to it'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "alarm" -d 'Receive OVOC\'s forwarded alarms (syslog over UDP) as JSON lines'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "session" -d 'The whole capture workflow for a fleet, unattended: capture both sides until OVOC reports Connection Lost, then collect and name the evidence; repeat up to --max-events'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "analyze" -d 'Say which side of the WAN lost the traffic: match the CPE\'s capture against the OVOC capture of the same device, correct the clocks, and report what never arrived'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "report" -d 'One self-contained HTML file for an incident from a session\'s --out: the devices and their verdicts, each round\'s timeline, loss windows, clock offset and files (with sha256), and the task log'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "lab" -d 'Emulated CPEs and OVOC for rehearsals and tests (no production device is touched)'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "generate" -d 'Write the man pages and shell completions (for packaging; output is committed)'
complete -c tc -n "__fish_tc_using_subcommand help; and not __fish_seen_subcommand_from cpe ovoc alarm session analyze report lab generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from cpe" -f -a "start" -d 'Start the debug capture on each device and confirm it is active'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from cpe" -f -a "stop" -d 'Stop the debug capture on each device and confirm it is not active'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from cpe" -f -a "status" -d 'Report capture state (active or not), product type, version and serial of each device'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from cpe" -f -a "fetch" -d 'Download each device\'s capture file over SFTP (stop the capture first)'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from ovoc" -f -a "serve" -d 'Run the capture agent (as root): tcpdump per CPE, OVOC forwarding rules, probes, driven by the UDP request protocol (REGISTER, CAPTURE, VERIFY, STOP) of trafficCapture 1.0.6'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from ovoc" -f -a "send" -d 'Send one request to an agent and print its responses as JSON lines'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from ovoc" -f -a "fetch" -d 'Download one round\'s OVOC files (every ring file the agent renamed at STOP) from an OVOC server over SFTP; one `ovoc.fetched` line per file'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from alarm" -f -a "listen" -d 'Listen for forwarded alarms; print each as an `alarm` line (others as `syslog.unparsed`)'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "status" -d 'How a running or finished session stands, per device: its step, round, when its captures started, the alarm, its files so far and the verdict. Reads the journal and the report only: the session is never disturbed'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "up" -d 'Serve emulated CPEs (REST over HTTPS, SFTP via a real sshd) until SIGINT/SIGTERM'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "alarm" -d 'Make the lab\'s emulated OVOC forward an alarm for DEVICE to the destination of the rule an agent registered for it ("Connection Lost", or "Connection established" with --clear)'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "demo" -d 'A complete session in one command: emulated CPEs behind a real router, the emulated OVOC polling them, a real agent with real tcpdump, `tc session`, traffic, a fault injected on the WAN, OVOC\'s Connection Lost, and each device\'s verdict. Needs root'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "down" -d 'Make an emulated device\'s REST API unreachable for a while (requests get no answer) (fault injection for rehearsals)'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "wan" -d 'Inject a fault on a `tc lab up --wan` lab: drop at its router what OVOC sends to DEVICE, what DEVICE sends, or both, or silence DEVICE\'s SNMP agent; for a while or until --restore. Needs root, like the lab'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "cleanup" -d 'Remove what a `tc lab up` that was killed left on the system: its system user, and with --dir its chroots, its WAN (namespaces, links, rules, the processes in them) and the directory'
complete -c tc -n "__fish_tc_using_subcommand help; and __fish_seen_subcommand_from lab" -f -a "captures" -d 'Write a generated pair of captures (OVOC side and CPE side) and what `tc analyze` should find in them (truth.json): for tests and benchmarks'
