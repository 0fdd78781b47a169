# The "seed" profile of the Lightning stand-in: the Lightning that chanload
# was first written against (the seed's benchmark README and the Lightning
# of its time: the functions below and the three spans). Loaded by lightning.exs after common.exs.
#
#   Lightning.Accounts.register_user/1, delete_user/1
#   Lightning.Projects.create_project/1,2, delete_project/1
#   Lightning.Channels.create_channel/1, update_channel/2  (field sink_url;
#     no delete_channel: that Lightning had none)
#   the proxy: spans request ⊃ (fetch_channel, upstream), keep-alive pooled
#     upstream connection per client connection, no client auth, no egress
#     policy, nothing persisted per request.

defmodule Lightning.Accounts.User do
  @moduledoc false
  use Lightning.StandIn.Schema,
    source: "users",
    fields: [:id, :first_name, :last_name, :email, :hashed_password, :inserted_at],
    assocs: [project_users: {:many, Lightning.Projects.ProjectUser, :user_id, []}],
    cascade: [{Lightning.Projects.ProjectUser, :user_id}]
end

defmodule Lightning.Channels.Channel do
  @moduledoc false
  use Lightning.StandIn.Schema,
    source: "channels",
    defaults: [enabled: true, lock_version: 0],
    fields: [:id, :name, :sink_url, :enabled, :project_id, :lock_version, :inserted_at],
    assocs: [project: {:one, Lightning.Projects.Project, :project_id}]
end

defmodule Lightning.Accounts do
  @moduledoc false
  alias Lightning.Accounts.User

  def register_user(attrs) do
    errors =
      []
      |> required(attrs, [:first_name, :email, :password])
      |> then(fn errs ->
        if is_binary(attrs[:email]) and Lightning.Repo.get_by(User, email: attrs[:email]),
          do: [{:email, {"has already been taken", []}} | errs],
          else: errs
      end)
      |> then(fn errs ->
        if is_binary(attrs[:password]) and byte_size(attrs[:password]) < 12,
          do: [{:password, {"should be at least %{count} character(s)", [count: 12]}} | errs],
          else: errs
      end)

    if errors == [] do
      user = %User{
        id: Lightning.Store.uuid(),
        first_name: attrs[:first_name],
        last_name: attrs[:last_name],
        email: attrs[:email],
        hashed_password: :crypto.hash(:sha256, attrs[:password]) |> Base.encode16(),
        inserted_at: Lightning.StandIn.now()
      }

      {:ok, Lightning.Store.put(user)}
    else
      {:error, %Ecto.Changeset{errors: Enum.reverse(errors), changes: attrs}}
    end
  end

  def delete_user(%User{} = user), do: Lightning.Repo.delete(user)

  defp required(errors, attrs, fields) do
    Enum.reduce(fields, errors, fn f, acc ->
      if attrs[f] in [nil, ""], do: [{f, {"can't be blank", [validation: :required]}} | acc], else: acc
    end)
  end
end

defmodule Lightning.Projects do
  @moduledoc false
  alias Lightning.Projects.Project
  alias Lightning.StandIn.ProjectRows

  def create_project(attrs, _schedule_email? \\ true) do
    entries = ProjectRows.entries(attrs) || []

    cond do
      attrs[:name] in [nil, ""] ->
        {:error, %Ecto.Changeset{errors: [name: {"can't be blank", [validation: :required]}]}}

      Enum.any?(entries, &(Lightning.Store.get(Lightning.Accounts.User, &1.user_id) == nil)) ->
        {:error, %Ecto.Changeset{errors: [project_users: {"user does not exist", []}]}}

      true ->
        {:ok, ProjectRows.insert(attrs[:name], attrs[:description], entries)}
    end
  end

  def delete_project(%Project{} = project), do: Lightning.Repo.delete(project)
end

defmodule Lightning.Channels do
  @moduledoc false
  alias Lightning.Channels.Channel

  def create_channel(attrs) do
    errors =
      []
      |> check(attrs[:name] in [nil, ""], :name, "can't be blank")
      |> check(not valid_url?(attrs[:sink_url]), :sink_url, "must be a valid URL")
      |> check(Lightning.Store.get(Lightning.Projects.Project, attrs[:project_id]) == nil, :project_id, "does not exist")
      |> check(
        is_binary(attrs[:name]) and is_binary(attrs[:project_id]) and
          Lightning.Repo.get_by(Channel, name: attrs[:name], project_id: attrs[:project_id]) != nil,
        :name,
        "has already been taken"
      )

    if errors == [] do
      {:ok,
       Lightning.Store.put(%Channel{
         id: Lightning.Store.uuid(),
         name: attrs[:name],
         sink_url: attrs[:sink_url],
         project_id: attrs[:project_id],
         enabled: Map.get(attrs, :enabled, true),
         inserted_at: Lightning.StandIn.now()
       })}
    else
      {:error, %Ecto.Changeset{errors: Enum.reverse(errors), changes: attrs}}
    end
  end

  def update_channel(%Channel{} = channel, attrs) do
    updated = struct(channel, Map.take(attrs, [:name, :sink_url, :enabled]))

    if valid_url?(updated.sink_url) do
      {:ok, Lightning.Store.put(%{updated | lock_version: channel.lock_version + 1})}
    else
      {:error, %Ecto.Changeset{errors: [sink_url: {"must be a valid URL", []}]}}
    end
  end

  defp check(errors, true, field, message), do: [{field, {message, []}} | errors]
  defp check(errors, false, _field, _message), do: errors

  defp valid_url?(url) when is_binary(url) do
    case URI.parse(url) do
      %URI{scheme: s, host: h} when s in ["http", "https"] and is_binary(h) and h != "" -> true
      _ -> false
    end
  end

  defp valid_url?(_), do: false
end

defmodule Lightning.ChannelProxy do
  @moduledoc false
  # /channels/:id/*path: a streaming HTTP/1.1 proxy on :gen_tcp, emitting the
  # three telemetry spans Lightning emits.
  @prefix [:lightning, :channel_proxy]

  def listen(port), do: Lightning.StandIn.Listener.listen(port, &serve(&1, %{buffer: "", upstream: nil}))

  defp serve(sock, state) do
    case read_head(sock, state.buffer) do
      {:ok, method, target, headers, rest} ->
        state = handle(sock, method, target, headers, %{state | buffer: rest})
        if state, do: serve(sock, state), else: :gen_tcp.close(sock)

      _ ->
        if state.upstream, do: :gen_tcp.close(state.upstream)
        :gen_tcp.close(sock)
    end
  end

  # Reads a request or response head with :erlang.decode_packet.
  def read_head(sock, buffer, type \\ :http_bin) do
    case :erlang.decode_packet(type, buffer, []) do
      {:ok, {:http_request, method, {:abs_path, target}, _v}, rest} ->
        read_headers(sock, rest, {to_string(method), target})

      {:ok, {:http_response, _v, status, _reason}, rest} ->
        read_headers(sock, rest, status)

      {:more, _} ->
        case :gen_tcp.recv(sock, 0) do
          {:ok, data} -> read_head(sock, buffer <> data, type)
          error -> error
        end

      {:ok, {:http_error, _}, _} ->
        {:error, :bad_request}

      {:error, _} = error ->
        error
    end
  end

  defp read_headers(sock, buffer, start, acc \\ []) do
    case :erlang.decode_packet(:httph_bin, buffer, []) do
      {:ok, {:http_header, _, name, _, value}, rest} ->
        read_headers(sock, rest, start, [{String.downcase(to_string(name)), value} | acc])

      {:ok, :http_eoh, rest} ->
        case start do
          {method, target} -> {:ok, method, target, Enum.reverse(acc), rest}
          status -> {:ok, status, Enum.reverse(acc), rest}
        end

      {:more, _} ->
        case :gen_tcp.recv(sock, 0) do
          {:ok, data} -> read_headers(sock, buffer <> data, start, acc)
          error -> error
        end

      _ ->
        {:error, :bad_header}
    end
  end

  defp handle(sock, method, target, headers, state) do
    {path, query} =
      case String.split(target, "?", parts: 2) do
        [p, q] -> {p, "?" <> q}
        [p] -> {p, ""}
      end

    case String.split(path, "/", parts: 4) do
      ["", "channels", id | rest] ->
        sub = Enum.at(rest, 0, "")

        :telemetry.span(@prefix ++ [:request], %{channel_id: id}, fn ->
          result = proxy(sock, method, id, sub, query, headers, state)
          {result, %{channel_id: id}}
        end)

      _ ->
        drain_body(sock, headers, state)
        reply(sock, 404, ~s({"error":"Not Found"}))
        state
    end
  end

  defp proxy(sock, method, id, sub, query, headers, state) do
    channel =
      :telemetry.span(@prefix ++ [:fetch_channel], %{channel_id: id}, fn ->
        found =
          case Lightning.Repo.get(Lightning.Channels.Channel, id) do
            %{enabled: true} = c -> c
            _ -> nil
          end

        {found, %{channel_id: id}}
      end)

    if channel == nil do
      state = drain_body(sock, headers, state)
      reply(sock, 404, ~s({"error":"Not Found"}))
      state
    else
      sink = URI.parse(channel.sink_url)
      base = String.trim_trailing(sink.path || "", "/")
      upstream_path = base <> "/" <> sub <> query

      :telemetry.span(@prefix ++ [:upstream], %{channel_id: id, sink_url: channel.sink_url, path: sub}, fn ->
        {forward(sock, method, sink, upstream_path, headers, state), %{channel_id: id}}
      end)
    end
  end

  defp forward(sock, method, sink, path, headers, state) do
    upstream =
      case state.upstream do
        nil ->
          case :gen_tcp.connect(String.to_charlist(sink.host), sink.port, [:binary, packet: :raw, active: false, nodelay: true]) do
            {:ok, u} -> u
            {:error, _} -> nil
          end

        u ->
          u
      end

    if upstream == nil do
      state = drain_body(sock, headers, state)
      reply(sock, 502, ~s({"error":"Bad Gateway"}))
      state
    else
      send_upstream(sock, upstream, method, sink, path, headers, state)
    end
  end

  defp send_upstream(sock, upstream, method, sink, path, headers, state) do
    {:ok, {peer, _}} = :inet.peername(sock)
    request_id = Base.encode16(:crypto.strong_rand_bytes(12), case: :lower)
    host = :proplists.get_value("host", headers, "")

    out_headers =
      headers
      |> Enum.reject(fn {k, _} -> k in ["x-request-id", "host", "connection"] end)
      |> Kernel.++([
        {"host", "#{sink.host}:#{sink.port}"},
        {"x-forwarded-for", :inet.ntoa(peer) |> to_string()},
        {"x-forwarded-host", host},
        {"x-forwarded-proto", "http"},
        {"x-request-id", request_id}
      ])

    head = [method, " ", path, " HTTP/1.1\r\n", Enum.map(out_headers, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"]
    :ok = :gen_tcp.send(upstream, head)
    rest = stream_body(sock, upstream, headers, state.buffer)

    case read_head(upstream, "") do
      {:ok, status, resp_headers, resp_rest} ->
        keep = Enum.reject(resp_headers, fn {k, _} -> k in ["connection", "keep-alive"] end)
        :ok = :gen_tcp.send(sock, ["HTTP/1.1 ", Integer.to_string(status), " OK\r\n", Enum.map(keep, fn {k, v} -> [k, ": ", v, "\r\n"] end), "\r\n"])
        leftover = stream_body(upstream, sock, resp_headers, resp_rest)
        if leftover != "", do: :gen_tcp.close(upstream)
        %{state | buffer: rest, upstream: if(leftover == "", do: upstream, else: nil)}

      _ ->
        :gen_tcp.close(upstream)
        reply(sock, 502, ~s({"error":"Bad Gateway"}))
        %{state | buffer: rest, upstream: nil}
    end
  end

  # Copies a message body from `from` to `to` as it arrives (Content-Length or
  # chunked, passed through as is); returns bytes read past its end.
  def stream_body(from, to, headers, buffer) do
    cond do
      (len = :proplists.get_value("content-length", headers)) != :undefined ->
        copy_length(from, to, String.to_integer(len), buffer)

      String.downcase(:proplists.get_value("transfer-encoding", headers, "")) == "chunked" ->
        copy_chunked(from, to, buffer)

      true ->
        buffer
    end
  end

  defp copy_length(_from, _to, 0, buffer), do: buffer

  defp copy_length(from, to, left, buffer) when byte_size(buffer) > 0 do
    take = min(left, byte_size(buffer))
    <<part::binary-size(take), rest::binary>> = buffer
    :ok = :gen_tcp.send(to, part)
    copy_length(from, to, left - take, rest)
  end

  defp copy_length(from, to, left, "") do
    {:ok, data} = :gen_tcp.recv(from, 0)
    copy_length(from, to, left, data)
  end

  defp copy_chunked(from, to, buffer) do
    case :binary.split(buffer, "\r\n") do
      [size_line, rest] ->
        {size, _} = Integer.parse(hd(String.split(size_line, ";")), 16)
        :ok = :gen_tcp.send(to, [size_line, "\r\n"])

        if size == 0 do
          copy_trailers(from, to, rest)
        else
          rest = copy_length(from, to, size + 2, rest)
          copy_chunked(from, to, rest)
        end

      [_partial] ->
        {:ok, data} = :gen_tcp.recv(from, 0)
        copy_chunked(from, to, buffer <> data)
    end
  end

  defp copy_trailers(from, to, buffer) do
    case :binary.split(buffer, "\r\n") do
      ["", rest] ->
        :ok = :gen_tcp.send(to, "\r\n")
        rest

      [line, rest] ->
        :ok = :gen_tcp.send(to, [line, "\r\n"])
        copy_trailers(from, to, rest)

      [_] ->
        {:ok, data} = :gen_tcp.recv(from, 0)
        copy_trailers(from, to, buffer <> data)
    end
  end

  defp drain_body(sock, headers, state) do
    %{state | buffer: discard(sock, headers, state.buffer)}
  end

  defp discard(sock, headers, buffer) do
    case :proplists.get_value("content-length", headers) do
      :undefined -> buffer
      len -> skip(sock, String.to_integer(len), buffer)
    end
  end

  defp skip(_sock, 0, buffer), do: buffer

  defp skip(_sock, left, buffer) when byte_size(buffer) >= left do
    <<_::binary-size(left), rest::binary>> = buffer
    rest
  end

  defp skip(sock, left, buffer) do
    {:ok, data} = :gen_tcp.recv(sock, 0)
    skip(sock, left - byte_size(buffer), data)
  end

  defp reply(sock, status, body) do
    :gen_tcp.send(sock, [
      "HTTP/1.1 ", Integer.to_string(status), " X\r\ncontent-type: application/json\r\ncontent-length: ",
      Integer.to_string(byte_size(body)), "\r\n\r\n", body
    ])
  end
end

defmodule Lightning.StandIn.Profile do
  @moduledoc false
  def name, do: "seed"

  def start(port) do
    :ok =
      Lightning.Store.start([
        Lightning.Accounts.User,
        Lightning.Projects.Project,
        Lightning.Projects.ProjectUser,
        Lightning.Channels.Channel
      ])

    Lightning.ChannelProxy.listen(port)
  end
end
