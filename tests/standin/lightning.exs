# A stand-in for OpenFn Lightning's channel proxy surface, for chanload's
# tests.
#
# Lightning itself cannot be built here. This script reproduces what chanload
# relies on as a real Erlang node: the
# Lightning.* functions used to set up the benchmark channel (rows kept in
# ETS), a :telemetry module, and an HTTP endpoint serving
# /channels/:id/*path that streams to the channel's upstream and emits the
# channel-proxy spans. It comes in two profiles:
#
#   seed   (default) the Lightning chanload was first written against:
#          create_channel/1, update_channel/2, field sink_url; spans request
#          ⊃ (fetch_channel, upstream); a pooled keep-alive upstream
#          connection per client connection; no client auth, no egress
#          policy, nothing persisted per request.          -> seed.exs
#
#   today  Lightning's main branch (read 2026-12): create_channel/2 and
#          update_channel/3 with actor:, delete_channel/2, field
#          destination_url, client auth (x-api-key / basic), spans inbound
#          ⊃ (fetch_channel, then request ⊃ upstream), Philter: egress policy
#          (private and loopback destinations refused unless allowed), a new
#          upstream connection per request, the response re-framed as
#          chunked, a ChannelRequest and a ChannelEvent row per request.
#                                          -> today.exs, today_proxy.exs
#
# Both load common.exs first (:telemetry, Ecto names, the ETS store,
# Lightning.Repo, Project / ProjectUser).
#
# Start it as a node:
#
#   elixir --sname lightning --cookie bench tests/standin/lightning.exs --port 0
#   elixir --sname lightning --cookie bench tests/standin/lightning.exs --port 0 --profile today
#
# The today profile reads CHANNEL_BLOCK_PRIVATE_NETWORKS (true/yes/false/no,
# default true: a loopback upstream such as 127.0.0.1 gets 403 "Request
# blocked by egress policy") and CHANNEL_ALLOWED_HOSTS (comma-separated host
# names that bypass the block), as Lightning's runtime config does:
#
#   CHANNEL_BLOCK_PRIVATE_NETWORKS=false elixir --sname lightning --cookie bench \
#     tests/standin/lightning.exs --port 0 --profile today
#
# It prints "lightning stand-in profile: P" and then, last,
# "lightning stand-in listening on http://127.0.0.1:PORT as NODE".

{opts, _args, invalid} = OptionParser.parse(System.argv(), strict: [port: :integer, profile: :string])

profile = Keyword.get(opts, :profile, "seed")

files =
  case profile do
    "seed" -> ["common.exs", "seed.exs"]
    "today" -> ["common.exs", "today.exs", "today_proxy.exs"]
    other -> IO.puts(:stderr, "unknown --profile #{inspect(other)} (seed or today)") && System.halt(2)
  end

if invalid != [] do
  IO.puts(:stderr, "bad options: #{inspect(invalid)} (usage: lightning.exs [--port N] [--profile seed|today])")
  System.halt(2)
end

Enum.each(files, &Code.require_file(&1, __DIR__))

:telemetry.init()
port = Lightning.StandIn.Profile.start(Keyword.get(opts, :port, 4000))
IO.puts("lightning stand-in profile: #{Lightning.StandIn.Profile.name()}")
IO.puts("lightning stand-in listening on http://127.0.0.1:#{port} as #{node()}")
Process.sleep(:infinity)
